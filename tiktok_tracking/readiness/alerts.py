"""Alerts when a market's readiness changes: the readiness_changed signal, mail, a signed webhook.

Each stored report is compared with the one before it (``changes``, pure); each market whose
verdict changed becomes a ReadinessAlert row and a ``readiness_changed`` signal. A change of
the tracking configuration recorded since the report before, to a setting that alone can stop
or double what TikTok counts (``config_log.WATCHED``), becomes an alert of its own and a
``tracking_config_changed`` signal. Out of the box, a receiver mails the site admins
(``mail_admins``); when READINESS names a webhook, the alert is POSTed there as signed JSON by
``deliver_alerts``, retried with backoff and recorded on its row. A market seen for the first
time raises no alert: there is no change to report. Two runs at once (two beats by accident)
raise each alert once (``store.assess``) and post it once (``claim``).
"""

import hashlib
import hmac
import json
import logging
import time
from datetime import timedelta
from itertools import pairwise

import requests
from django.core.mail import mail_admins
from django.db.models import F
from django.utils import timezone

from tiktok_tracking import conf
from tiktok_tracking.config_log import tracking_changes
from tiktok_tracking.models import ConfigChange, ReadinessAlert
from tiktok_tracking.redaction import redact
from tiktok_tracking.signals import readiness_changed, tracking_config_changed

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-TikTok-Tracking-Signature"
TIMESTAMP_HEADER = "X-TikTok-Tracking-Timestamp"
MAX_ATTEMPTS = 8
FIRST_RETRY_SECONDS = 60
TIMEOUT_SECONDS = 10
ERROR_LENGTH = 500


def changes(previous, current):
    """``[(market, old, new, reasons)]`` of the markets whose verdict differs between two
    report documents, in the current report's order (pure)."""
    before = {market["market"]: market["verdict"] for market in previous.get("markets", ())}
    return [
        (market["market"], before[market["market"]], market["verdict"], market["reasons"])
        for market in current.get("markets", ())
        if market["market"] in before and before[market["market"]] != market["verdict"]
    ]


def new_alert(now, **fields):
    """A ReadinessAlert row, pending for the webhook when one is set."""
    webhook = conf.readiness_settings()["ALERT_WEBHOOK_URL"]
    return ReadinessAlert.objects.create(
        created_at=now,
        status=ReadinessAlert.Status.PENDING if webhook else ReadinessAlert.Status.SENT,
        next_attempt_at=now,
        **fields,
    )


def record_changes(previous, current, now=None):
    """Record an alert for each change from ``previous`` to ``current`` and signal it."""
    now = now or timezone.now()
    alerts = []
    for market, old, new, reasons in changes(previous, current):
        alert = new_alert(now, market=market, old=old, new=new, reasons=reasons)
        alerts.append(alert)
        readiness_changed.send(
            sender=ReadinessAlert, market=market, old=old, new=new, reasons=reasons, alert=alert
        )
    return alerts


def record_config_changes(seen_id, now=None):
    """Record an alert for each configuration record after the one ``seen_id`` names (the
    latest the report before saw) that changes a watched setting, and signal it. Without
    ``seen_id`` (a report from before the app kept it) there is nothing to compare with."""
    now = now or timezone.now()
    if seen_id is None:
        return []
    records = list(ConfigChange.objects.filter(pk__gte=seen_id).order_by("pk"))
    alerts = []
    for older, newer in pairwise(records):
        reasons = tracking_changes(older.settings, newer.settings)
        if not reasons:
            continue
        alert = new_alert(now, kind=ReadinessAlert.Kind.CONFIG_CHANGED, reasons=reasons)
        alerts.append(alert)
        tracking_config_changed.send(
            sender=ReadinessAlert, reasons=reasons, alert=alert, recorded_at=newer.recorded_at
        )
    return alerts


def mail_site_admins(sender, market, old, new, reasons, **kwargs):
    """The built-in receiver: mail the site admins (ADMINS) when ALERT_MAIL is on."""
    if not conf.readiness_settings()["ALERT_MAIL"]:
        return
    lines = [f"TikTok rule readiness of {market}: {old} -> {new}", ""]
    lines += [f"- {reason}" for reason in reasons]
    lines += ["", "Hold automated ad rules for this market while it is not ready."]
    mail_admins(f"TikTok tracking: {market} is {new} (was {old})", "\n".join(lines))


def mail_config_change(sender, reasons, recorded_at, **kwargs):
    """The built-in receiver of a configuration change: mail the site admins (ALERT_MAIL)."""
    if not conf.readiness_settings()["ALERT_MAIL"]:
        return
    when = recorded_at.strftime("%Y-%m-%d %H:%M %Z")
    lines = [f"The TikTok tracking configuration changed (first in use {when}):", ""]
    lines += [f"- {reason}" for reason in reasons]
    lines += ["", "If nobody meant it, every market's figures are suspect from then on."]
    mail_admins("TikTok tracking: the tracking configuration changed", "\n".join(lines))


def payload(alert):
    """The JSON the webhook receives for ``alert``: ``type`` says which kind it is; a
    configuration change concerns every market, so its ``market``, ``old`` and ``new`` are
    null."""
    return {
        "version": 1,
        "type": alert.kind,
        "id": alert.pk,
        "created_at": alert.created_at.isoformat(),
        "market": alert.market or None,
        "old": alert.old or None,
        "new": alert.new or None,
        "reasons": alert.reasons,
    }


def signature(secret, timestamp, body):
    """``sha256=<hex>``: HMAC-SHA256 of ``<timestamp>.<body>`` under the shared secret."""
    signed = f"{timestamp}.".encode() + body
    return "sha256=" + hmac.new(secret.encode("utf-8"), signed, hashlib.sha256).hexdigest()


def signed_request(alert, secret, timestamp=None):
    """The body and headers of ``alert``'s POST."""
    timestamp = str(int(time.time() if timestamp is None else timestamp))
    body = json.dumps(payload(alert), sort_keys=True).encode("utf-8")
    headers = {
        "Content-Type": "application/json",
        TIMESTAMP_HEADER: timestamp,
        SIGNATURE_HEADER: signature(secret, timestamp, body),
    }
    return body, headers


def claim(alert):
    """Take ``alert`` for one POST, counting the attempt; False if another run took it first.

    The claim moves the next attempt a retry's delay ahead, so a run that dies mid-POST leaves
    the alert to be tried again then, and no other run posts it meanwhile.
    """
    taken = ReadinessAlert.objects.filter(
        pk=alert.pk, status=ReadinessAlert.Status.PENDING, attempts=alert.attempts
    ).update(
        attempts=F("attempts") + 1,
        next_attempt_at=timezone.now() + timedelta(seconds=FIRST_RETRY_SECONDS),
    )
    if taken:
        alert.attempts += 1
    return bool(taken)


def deliver_alerts(now=None, session=None):
    """POST the pending alerts that are due to the webhook; returns how many were sent."""
    now = now or timezone.now()
    settings = conf.readiness_settings()
    url, secret = settings["ALERT_WEBHOOK_URL"], settings["ALERT_WEBHOOK_SECRET"]
    due = ReadinessAlert.objects.filter(
        status=ReadinessAlert.Status.PENDING, next_attempt_at__lte=now
    ).order_by("created_at", "pk")
    if not url:
        return 0
    session = session or requests.Session()
    sent = 0
    for alert in due:
        if not claim(alert):
            continue  # another run (a second beat's) took it first and posts it
        body, headers = signed_request(alert, secret)
        try:
            answer = session.post(url, data=body, headers=headers, timeout=TIMEOUT_SECONDS)
            error = None if answer.ok else f"HTTP {answer.status_code}"
        except requests.RequestException as exc:
            error = f"{type(exc).__name__}: {exc}"
        if error is None:
            alert.status, alert.sent_at, alert.last_error = ReadinessAlert.Status.SENT, now, ""
            sent += 1
        else:
            # The error may quote the URL, which may carry credentials: redacted, and bounded.
            alert.last_error = redact(error, [secret] if secret else [], limit=ERROR_LENGTH)
            if alert.attempts >= MAX_ATTEMPTS:
                alert.status = ReadinessAlert.Status.FAILED
            else:
                delay = FIRST_RETRY_SECONDS * 2 ** (alert.attempts - 1)
                alert.next_attempt_at = now + timedelta(seconds=delay)
            logger.warning(
                "TikTok readiness alert %s not delivered (attempt %d): %s",
                alert.pk,
                alert.attempts,
                alert.last_error,
            )
        alert.save(update_fields=["status", "attempts", "next_attempt_at", "sent_at", "last_error"])
    return sent
