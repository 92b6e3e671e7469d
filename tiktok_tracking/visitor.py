"""The visitor behind a request: first-party id, consent, country, client ip, click id."""

import ipaddress
import re
import secrets
from dataclasses import dataclass

from django.core.signing import BadSignature
from django.utils.module_loading import import_string

from tiktok_tracking import conf
from tiktok_tracking.consent import BROWSER, STATUSES, decide, policy_from_settings

VISITOR_COOKIE = "tiktok_vid"
CONSENT_COOKIE = "tiktok_consent"
CONSENT_COOKIE_SALT = "tiktok_tracking.consent"
TTCLID_PARAM = "ttclid"
TTCLID_COOKIE = "ttclid"
TTP_COOKIE = "_ttp"
ONE_YEAR = 365 * 24 * 3600
MAX_COOKIE_VALUE = 512
# The ids this app issues (token_urlsafe); anything else in the cookie was not set by it.
_VISITOR_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


@dataclass
class Visitor:
    """What the app knows of the visitor making a request."""

    visitor_id: str
    is_new: bool
    consent_status: str | None
    country: str | None
    global_privacy_control: bool
    ttclid: str | None

    def decision(self, lane=BROWSER):
        return decide(
            policy_from_settings(),
            lane=lane,
            country=self.country,
            status=self.consent_status,
            global_privacy_control=self.global_privacy_control,
        )


def get_visitor(request):
    """The request's Visitor, computed once (the middleware sets it; tags work without it)."""
    visitor = getattr(request, "tiktok", None)
    if visitor is None:
        visitor = read_visitor(request)
        request.tiktok = visitor
    return visitor


def read_visitor(request):
    visitor_id = valid_visitor_id(request.COOKIES.get(VISITOR_COOKIE))
    return Visitor(
        visitor_id=visitor_id or secrets.token_urlsafe(16),
        is_new=not visitor_id,
        consent_status=read_consent_cookie(request),
        country=resolve_country(request),
        global_privacy_control=request.META.get("HTTP_SEC_GPC", "").strip() == "1",
        ttclid=clean_cookie(request.GET.get(TTCLID_PARAM))
        or clean_cookie(request.COOKIES.get(TTCLID_COOKIE)),
    )


def valid_visitor_id(value):
    """The visitor cookie's id if it is one this app could have issued, else None.

    A forged or mangled cookie gets the visitor a fresh id: it must never reach the columns
    (64 characters) it is stored in, nor stop the checkout that stores it.
    """
    if value and _VISITOR_ID.fullmatch(value):
        return value
    return None


def clean_cookie(value):
    """A cookie or parameter value as sent, or None if empty, too long or not printable."""
    if not value or len(value) > MAX_COOKIE_VALUE or not value.isprintable():
        return None
    return value


def read_consent_cookie(request):
    """The visitor's consent status under the current policy version, or None."""
    try:
        value = request.get_signed_cookie(CONSENT_COOKIE, salt=CONSENT_COOKIE_SALT)
    except (KeyError, BadSignature):
        return None
    status, _, version = value.partition(":")
    # A choice made under an older policy does not count: the visitor is asked again.
    if status not in STATUSES or version != str(conf.get("CONSENT_POLICY_VERSION")):
        return None
    return status


def set_consent_cookie(response, status, *, secure=False):
    """The visitor's choice in a signed cookie; ``secure`` (an HTTPS request) keeps it off HTTP."""
    response.set_signed_cookie(
        CONSENT_COOKIE,
        f"{status}:{conf.get('CONSENT_POLICY_VERSION')}",
        salt=CONSENT_COOKIE_SALT,
        max_age=ONE_YEAR,
        samesite="Lax",
        httponly=True,
        secure=secure,
    )


def resolve_country(request):
    """The visitor's ISO country code from the configured resolver or trusted header, or None."""
    resolver = conf.get("COUNTRY_RESOLVER")
    country = None
    if resolver:
        country = (import_string(resolver) if isinstance(resolver, str) else resolver)(request)
    header = conf.get("COUNTRY_HEADER")
    if not country and header:
        country = request.META.get(header)
    country = country.strip().upper() if isinstance(country, str) else ""
    return country if len(country) == 2 and country.isascii() and country.isalpha() else None


def client_ip(remote_addr, forwarded_for, trusted_proxies):
    """The client's address: X-Forwarded-For is believed only hop by hop from trusted proxies.

    Walking from the right, every address added by a trusted proxy is skipped; the first one a
    trusted proxy did not add is the client (anything left of it may be forged by the client).
    """
    networks = [ipaddress.ip_network(p, strict=False) for p in trusted_proxies]

    def trusted(address):
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in networks)

    address = remote_addr
    if not address or not trusted(address):
        return _valid_ip(address)
    hops = [hop.strip() for hop in (forwarded_for or "").split(",") if hop.strip()]
    for hop in reversed(hops):
        if not trusted(hop):
            return _valid_ip(hop)
    return _valid_ip(hops[0] if hops else address)


def _valid_ip(value):
    try:
        ip = ipaddress.ip_address(value) if value else None
    except ValueError:
        return None
    # A zone id ("fe80::1%eth0") names an interface of the shopper's own machine: no column
    # (PostgreSQL's inet) nor TikTok takes it.
    if ip is None or getattr(ip, "scope_id", None):
        return None
    return str(ip)
