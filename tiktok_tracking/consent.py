"""Consent policy: whether an event may leave the shop, per lane, checked again at send time."""

from dataclasses import dataclass
from functools import lru_cache

from tiktok_tracking import conf

GRANTED = "granted"
DENIED = "denied"
STATUSES = (GRANTED, DENIED)

BROWSER = "browser"
SERVER = "server"

OPT_IN = "opt_in"
OPT_OUT = "opt_out"


@dataclass(frozen=True)
class ConsentPolicy:
    """Which countries need opt-in, which map a denial to limited data use, and the version."""

    opt_in_countries: frozenset
    limited_data_use_countries: frozenset
    unknown_country: str = OPT_IN
    version: str = "1"

    def requires_opt_in(self, country):
        if not country:
            return self.unknown_country == OPT_IN
        return country in self.opt_in_countries


@dataclass(frozen=True)
class ConsentDecision:
    """What a lane may do for one visitor: send, hold (pixel queues until a grant), or nothing."""

    allowed: bool
    hold: bool = False
    limited_data_use: bool = False
    reason: str = ""


# Pure and asked with few distinct arguments (countries x statuses), for every page and event.
@lru_cache(maxsize=4096)
def decide(policy, *, lane, country, status, global_privacy_control=False):
    """Decide for one visitor and lane. ``status`` is "granted", "denied" or None (not asked).

    Pure: the same answer for the pixel at render time and the server at record and send time.
    Global Privacy Control counts as an opt-out where US state privacy laws give it force.
    """
    country = (country or "").upper() or None
    where = country or "unknown country"
    if status == GRANTED:
        return ConsentDecision(allowed=True, reason=f"consent granted ({where})")
    opted_out = status == DENIED or global_privacy_control
    if country in policy.limited_data_use_countries and not policy.requires_opt_in(country):
        if opted_out:
            why = "consent denied" if status == DENIED else "Global Privacy Control"
            return ConsentDecision(
                allowed=True, limited_data_use=True, reason=f"{why}: limited data use ({where})"
            )
        return ConsentDecision(allowed=True, reason=f"opt-out region, no objection ({where})")
    if status == DENIED:
        return ConsentDecision(allowed=False, reason=f"consent denied ({where})")
    if policy.requires_opt_in(country):
        if lane == BROWSER:
            return ConsentDecision(
                allowed=False, hold=True, reason=f"awaiting consent in an opt-in region ({where})"
            )
        return ConsentDecision(allowed=False, reason=f"no consent in an opt-in region ({where})")
    return ConsentDecision(allowed=True, reason=f"opt-out region, no objection ({where})")


def policy_from_settings():
    """The policy configured in ``TIKTOK_TRACKING`` (read at call time)."""
    return _policy(
        tuple(conf.get("CONSENT_OPT_IN_COUNTRIES")),
        tuple(conf.get("CONSENT_LIMITED_DATA_USE_COUNTRIES")),
        conf.get("UNKNOWN_COUNTRY_POLICY"),
        str(conf.get("CONSENT_POLICY_VERSION")),
    )


@lru_cache(maxsize=16)
def _policy(opt_in_countries, limited_data_use_countries, unknown_country, version):
    # Keyed on the settings' values, so a changed setting still takes effect at once; the
    # country sets are built once instead of on every page and every event.
    return ConsentPolicy(
        opt_in_countries=frozenset(c.upper() for c in opt_in_countries),
        limited_data_use_countries=frozenset(c.upper() for c in limited_data_use_countries),
        unknown_country=unknown_country,
        version=version,
    )
