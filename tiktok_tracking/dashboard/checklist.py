"""The pre-launch checklist: a table of rules over the period's facts, judged by one function."""

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple

from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext_lazy

from tiktok_tracking.dashboard.figures import Ratio, purchase_names
from tiktok_tracking.standards import ALLOWED_EVENTS


class CheckStatus(models.TextChoices):
    """The verdict of one checklist item."""

    PASSED = "pass", _("PASS")
    WARNING = "warn", _("WARN")
    FAILED = "fail", _("FAIL")


PASS = CheckStatus.PASSED
WARN = CheckStatus.WARNING
FAIL = CheckStatus.FAILED
CHECK_COLOURS = {PASS: "#2e7d32", WARN: "#946c00", FAIL: "#c62828"}

# A few misses are webhooks that have not arrived yet; many mean the lanes build ids apart.
IDS_MATCH_PASS = 95.0
IDS_MATCH_WARN = 80.0
FAILED_PURCHASES_MAX = 1.0
# Without email or phone TikTok attributes mostly on click ids and cookies, which expire.
MATCH_QUALITY_PASS = 50.0


@dataclass(frozen=True)
class HealthFacts:
    """The numbers the pre-launch checklist is judged on, gathered by the view."""

    purchase_event: str
    receipts: int = 0
    receipt_names: frozenset = field(default_factory=frozenset)
    server_recorded: int = 0
    server_delivered: int = 0
    server_purchase_names: frozenset = field(default_factory=frozenset)
    # Every event name the server lane recorded in the period (the purchase, checkout funnel).
    server_event_names: frozenset = field(default_factory=frozenset)
    purchase_receipts: int = 0
    purchase_receipts_matched: int = 0
    purchases_recorded: int = 0
    purchases_failed: int = 0
    purchases_delivered: int = 0
    stale_in_flight: int = 0
    merged: int = 0
    with_email_or_phone: int = 0
    consent_policy_version: str = ""
    opt_in_countries: tuple = ()
    config_changes: int = 0
    config_latest: datetime | None = None
    # The settings in force differ from the last record: the sweeper has not recorded them yet.
    config_outdated: bool = False
    # Rule readiness: whether a report is stored, and its not-ready countries pooled in a
    # market that is not ("DE in EU (ready)").
    readiness_judged: bool = False
    pooled_not_ready: tuple = ()


@dataclass(frozen=True)
class CheckItem:
    """One checklist line: what was checked, the verdict and a one-line reason."""

    key: str
    label: str
    status: CheckStatus
    detail: str

    @property
    def colour(self):
        return CHECK_COLOURS[self.status]


# --- Conditions on a rule's figures, named so that the table below reads as data -------------


def is_set(name):
    return lambda figures: bool(figures[name])


def not_set(name):
    return lambda figures: not figures[name]


def at_least(name, threshold):
    return lambda figures: figures[name] >= threshold


def above(name, threshold):
    return lambda figures: figures[name] > threshold


def all_of(*conditions):
    return lambda figures: all(condition(figures) for condition in conditions)


def always(figures):
    return True


class Case(NamedTuple):
    """One outcome of a rule: the verdict when ``when`` holds, and the reason shown.

    The reason is a translatable text formatted with the rule's figures, or a tuple of such
    texts: the clauses of one sentence, joined with semicolons.
    """

    status: CheckStatus
    when: Callable[[dict], bool]
    reason: object


class Rule(NamedTuple):
    """One checklist item: the figures it judges and its cases, the first that holds wins."""

    key: str
    label: str
    figures: Callable[[HealthFacts], dict]
    cases: tuple[Case, ...]


def _ratio(part, whole):
    ratio = Ratio(part, whole)
    return {"share": ratio, "percent": ratio.percent}


def _name_figures(facts):
    names = purchase_names(facts.purchase_event)
    others = (facts.receipt_names & names) - {facts.purchase_event}
    return {
        "name": facts.purchase_event,
        "browser": ", ".join(sorted(others)),
        "undefined": ", ".join(
            sorted(facts.receipt_names - ALLOWED_EVENTS - {facts.purchase_event})
        ),
        "renamed": ", ".join(sorted(facts.server_purchase_names - {facts.purchase_event})),
        "purchase_receipts": bool(facts.receipt_names & names),
    }


def _silent_events(facts):
    """The events the server recorded that no page's pixel reported; a purchase reported under
    another purchase name still counts as reported (the names check judges that)."""
    names = purchase_names(facts.purchase_event)
    seen = facts.receipt_names | (names if facts.receipt_names & names else frozenset())
    return ", ".join(sorted(facts.server_event_names - seen))


def _config_figures(facts):
    latest = facts.config_latest
    return {
        "n": facts.config_changes if latest is not None else 0,
        "date": timezone.localtime(latest).strftime("%Y-%m-%d %H:%M") if latest else "",
        "outdated": facts.config_outdated,
    }


IDS_MATCH_TEXT = _(
    "%(matched)d of %(total)d purchase receipts (%(share)s) have a server row with the same "
    "event_id."
)
MATCH_QUALITY_TEXT = _("%(share)s of delivered purchases carry a hashed email or phone.")
STALE_TEXT = ngettext_lazy(
    "%(stale)d purchase has waited over an hour to be sent (is the worker running?)",
    "%(stale)d purchases have waited over an hour to be sent (is the worker running?)",
    "stale",
)
FAILED_TEXT = _("%(failed)d purchases failed (%(share)s, more than 1%%)")

RULES = (
    Rule(
        "pixel_fires",
        _("Pixel fires on key pages"),
        lambda facts: {
            "n": facts.receipts,
            "server": facts.server_recorded,
            "silent": _silent_events(facts),
        },
        (
            Case(
                WARN,
                all_of(is_set("n"), is_set("silent")),
                _(
                    "The server recorded %(silent)s but no page's pixel reported it: check the "
                    "tag on that page (checkout, thank-you)."
                ),
            ),
            Case(
                PASS,
                is_set("n"),
                ngettext_lazy(
                    "%(n)d browser receipt in the period, for every event the server records.",
                    "%(n)d browser receipts in the period, for every event the server records.",
                    "n",
                ),
            ),
            Case(
                WARN,
                not_set("server"),
                _("No browser receipt and no server event in the period: place a test order."),
            ),
            Case(
                FAIL,
                always,
                _(
                    "The server recorded events but no page reported the pixel firing: check "
                    "the pixel tag and the receipt endpoint on the thank-you page."
                ),
            ),
        ),
    ),
    Rule(
        "server_delivers",
        _("Server lane delivers"),
        lambda facts: {"n": facts.server_delivered, "recorded": facts.server_recorded},
        (
            Case(
                PASS,
                is_set("n"),
                ngettext_lazy(
                    "%(n)d event delivered to the Events API in the period.",
                    "%(n)d events delivered to the Events API in the period.",
                    "n",
                ),
            ),
            Case(WARN, not_set("recorded"), _("No server event recorded in the period.")),
            Case(
                FAIL,
                always,
                _(
                    "Events were recorded but none was delivered: check the access token, the "
                    "worker and the failures below."
                ),
            ),
        ),
    ),
    Rule(
        "ids_match",
        _("Event ids match"),
        lambda facts: {
            "matched": facts.purchase_receipts_matched,
            "total": facts.purchase_receipts,
            **_ratio(facts.purchase_receipts_matched, facts.purchase_receipts),
        },
        (
            Case(WARN, not_set("total"), _("No purchase receipt from the browser to compare yet.")),
            Case(PASS, at_least("percent", IDS_MATCH_PASS), IDS_MATCH_TEXT),
            Case(WARN, at_least("percent", IDS_MATCH_WARN), IDS_MATCH_TEXT),
            Case(FAIL, always, IDS_MATCH_TEXT),
        ),
    ),
    Rule(
        "names_match",
        _("Event names match"),
        _name_figures,
        (
            Case(
                FAIL,
                is_set("browser"),
                _(
                    "The pixel sent the purchase as %(browser)s but the server sends %(name)s: "
                    "TikTok will not merge them."
                ),
            ),
            Case(
                WARN,
                is_set("undefined"),
                _("The pixel sent events TikTok does not define: %(undefined)s."),
            ),
            Case(
                WARN,
                is_set("renamed"),
                _("Some server rows of the period use %(renamed)s: the purchase name changed."),
            ),
            Case(
                WARN,
                not_set("purchase_receipts"),
                _("No purchase receipt from the browser to compare yet."),
            ),
            Case(PASS, always, _("Both lanes call the purchase %(name)s.")),
        ),
    ),
    Rule(
        "orders_reconcile",
        _("Orders reconcile"),
        lambda facts: {
            "recorded": facts.purchases_recorded,
            "stale": facts.stale_in_flight,
            "failed": facts.purchases_failed,
            **_ratio(facts.purchases_failed, facts.purchases_recorded),
        },
        (
            Case(WARN, not_set("recorded"), _("No purchase recorded in the period.")),
            Case(
                FAIL,
                all_of(is_set("stale"), above("percent", FAILED_PURCHASES_MAX)),
                (STALE_TEXT, FAILED_TEXT),
            ),
            Case(FAIL, is_set("stale"), (STALE_TEXT,)),
            Case(FAIL, above("percent", FAILED_PURCHASES_MAX), (FAILED_TEXT,)),
            Case(
                PASS,
                always,
                _("Every purchase of the period was sent or settled; %(share)s failed."),
            ),
        ),
    ),
    Rule(
        "dedup_visible",
        _("Deduplication visible"),
        lambda facts: {"n": facts.merged, "delivered": facts.purchases_delivered},
        (
            Case(
                PASS,
                is_set("n"),
                ngettext_lazy(
                    "%(n)d purchase reached TikTok from both lanes with the same id.",
                    "%(n)d purchases reached TikTok from both lanes with the same id.",
                    "n",
                ),
            ),
            Case(WARN, not_set("delivered"), _("No delivered purchase in the period yet.")),
            Case(
                FAIL,
                always,
                _(
                    "Purchases were delivered but the browser confirmed none of them: nothing "
                    "will merge."
                ),
            ),
        ),
    ),
    Rule(
        "match_quality",
        _("Match quality"),
        lambda facts: {
            "delivered": facts.purchases_delivered,
            **_ratio(facts.with_email_or_phone, facts.purchases_delivered),
        },
        (
            Case(WARN, not_set("delivered"), _("No delivered purchase in the period yet.")),
            Case(PASS, at_least("percent", MATCH_QUALITY_PASS), MATCH_QUALITY_TEXT),
            Case(WARN, always, MATCH_QUALITY_TEXT),
        ),
    ),
    Rule(
        "consent_policy",
        _("Consent policy set"),
        lambda facts: {
            "version": facts.consent_policy_version,
            "n": len(facts.opt_in_countries),
        },
        (
            Case(WARN, not_set("version"), _("CONSENT_POLICY_VERSION is not set.")),
            Case(
                WARN,
                not_set("n"),
                _("CONSENT_OPT_IN_COUNTRIES is empty: every country sends without asking."),
            ),
            Case(
                PASS,
                always,
                ngettext_lazy(
                    "Policy version %(version)s; %(n)d opt-in country.",
                    "Policy version %(version)s; %(n)d opt-in countries.",
                    "n",
                ),
            ),
        ),
    ),
    Rule(
        "rule_scope",
        _("Rule scope follows tracking quality"),
        lambda facts: {
            "judged": facts.readiness_judged,
            "n": len(facts.pooled_not_ready),
            "pooled": ", ".join(facts.pooled_not_ready),
        },
        (
            Case(
                WARN,
                not_set("judged"),
                _(
                    "No readiness report yet: the periodic task "
                    "tiktok_tracking.assess_readiness stores one every 5 minutes."
                ),
            ),
            Case(
                FAIL,
                is_set("n"),
                _(
                    "Not-ready countries pooled with sound ones: %(pooled)s. Ad rules over the "
                    "market read a blend of good and broken numbers: judge and scope them apart "
                    "(READINESS['MARKETS'])."
                ),
            ),
            Case(
                PASS,
                always,
                _("No not-ready country is pooled with sound ones in a market."),
            ),
        ),
    ),
    Rule(
        "config_recorded",
        _("Configuration changes recorded"),
        _config_figures,
        (
            Case(WARN, not_set("n"), _("No configuration recorded yet.")),
            Case(
                WARN,
                is_set("outdated"),
                _(
                    "The settings changed after the last record (%(date)s): the sweeper "
                    "records them on its next run."
                ),
            ),
            Case(
                PASS,
                always,
                ngettext_lazy(
                    "Last change on %(date)s; %(n)d change recorded.",
                    "Last change on %(date)s; %(n)d changes recorded.",
                    "n",
                ),
            ),
        ),
    ),
)


def _reason(text, figures):
    if isinstance(text, tuple):
        return "; ".join(str(clause % figures) for clause in text) + "."
    return str(text % figures)


def judge(rule, facts):
    """One rule judged on ``facts``: the first case that holds gives the verdict (pure)."""
    figures = rule.figures(facts)
    case = next(case for case in rule.cases if case.when(figures))
    return CheckItem(rule.key, rule.label, case.status, _reason(case.reason, figures))


def evaluate_checklist(facts, rules=RULES):
    """The pre-launch checklist judged on ``facts``: one CheckItem per rule, in order (pure)."""
    return [judge(rule, facts) for rule in rules]
