"""Alerts when a market's readiness changes: the readiness_changed signal, mail, a signed webhook.

Each stored report is compared with the one before it (``changes``, pure); each market whose
verdict changed becomes a ReadinessAlert row and a ``readiness_changed`` signal. A change of
the tracking configuration recorded since the report before, to a setting that alone can stop
or double what TikTok counts (``config_log.WATCHED``), becomes an alert of its own and a
``tracking_config_changed`` signal. Out of the box, a receiver mails the site admins
(``mail_admins``); when READINESS names a webhook, the alert is POSTed there as signed JSON by
``deliver_alerts``, retried with backoff and recorded on its row; with no webhook the row reads
"not configured". A market seen for the first time raises no alert: there is no change to
report. Two runs at once (two beats by accident) raise each alert once (``store.assess``) and
post it once (``claim``).

The POSTs run in a task of their own (``tiktok_tracking.deliver_alerts``, on ALERT_QUEUE), never
inside a delivery task, each within a whole-request deadline, one at a time across every
worker, oldest first: a webhook that hangs or trickles holds at most one worker process,
for at most its deadline per attempt, and never the purchases.
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
from tiktok_tracking.client import DeadlineAdapter, RequestDeadline
from tiktok_tracking.config_log import tracking_changes
from tiktok_tracking.models import ConfigChange, ReadinessAlert
from tiktok_tracking.redaction import redact
from tiktok_tracking.signals import readiness_changed, tracking_config_changed

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-TikTok-Tracking-Signature"
TIMESTAMP_HEADER = "X-TikTok-Tracking-Timestamp"
MAX_ATTEMPTS = 8
FIRST_RETRY_SECONDS = 60
# The whole of one POST: connecting, sending, and the answer's status line and headers, however
# slowly they trickle in. A claim outlasts it (FIRST_RETRY_SECONDS), so no other run posts the
# alert while it is in flight.
TIMEOUT_SECONDS = 10
# A run starts no POST after this long, so that a backlog of alerts behind a slow webhook does
# not keep one worker process for long; the next run (published at once) goes on.
RUN_SECONDS = 10
# A published run that no worker has taken within this long is dropped: the readiness task
# publishes another on each of its runs while an alert is due (ALERT_QUEUE with no worker
# consuming it would otherwise fill up).
RUN_EXPIRES_SECONDS = 3600
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
    """A ReadinessAlert row, pending for the webhook when one is set, else not configured."""
    webhook = conf.readiness_settings()["ALERT_WEBHOOK_URL"]
    return ReadinessAlert.objects.create(
        created_at=now,
        status=ReadinessAlert.Status.PENDING if webhook else ReadinessAlert.Status.NOT_CONFIGURED,
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


def answer_error(status):
    """The error an answer's HTTP ``status`` makes of a POST, or None for a 2xx (pure).

    A redirect is not followed: requests would repeat the POST as a GET without the body (302,
    303), and a receiver that moved must be given its new URL, not reached by chance.
    """
    if 200 <= status < 300:
        return None
    if 300 <= status < 400:
        return f"HTTP {status}: a redirect, not followed (set ALERT_WEBHOOK_URL to where it points)"
    return f"HTTP {status}"


def webhook_session():
    """A Session whose connections a :class:`RequestDeadline` can shut down."""
    session = requests.Session()
    for prefix in ("https://", "http://"):
        session.mount(prefix, DeadlineAdapter())
    return session


def post_alert(session, url, body, headers):
    """POST one alert within TIMEOUT_SECONDS in all; the error, or None when it was taken."""
    deadline = RequestDeadline(TIMEOUT_SECONDS)
    try:
        with deadline:
            answer = session.post(
                url,
                data=body,
                headers=headers,
                # Each wait on the socket; the deadline bounds their sum.
                timeout=max(deadline.remaining(), 0.001),
                allow_redirects=False,
                # The status says it all: the body, which may trickle too, is never read.
                stream=True,
            )
            with answer:
                status = answer.status_code
    except (requests.RequestException, OSError) as exc:
        if deadline.expired or isinstance(exc, requests.Timeout):
            return f"Timed out after {TIMEOUT_SECONDS:g} s (the whole request)"
        return f"{type(exc).__name__}: {exc}"
    if deadline.expired:
        return f"Timed out after {TIMEOUT_SECONDS:g} s (the whole request)"
    return answer_error(status)


def next_in_line(now):
    """The oldest pending alert if it is due at ``now``, else None.

    Alerts go out in the order they were raised, one at a time: while the oldest is being
    posted (its claim moved its next attempt ahead) or waits for its retry, the ones behind it
    wait too. So however many runs are queued, at most one POST is in flight.
    """
    oldest = (
        ReadinessAlert.objects.filter(status=ReadinessAlert.Status.PENDING)
        .order_by("created_at", "pk")
        .first()
    )
    if oldest is None or oldest.next_attempt_at > now:
        return None
    return oldest


def webhook_due(now=None):
    """Whether a webhook is set and an alert waits for it now: a run has work to do."""
    if not conf.readiness_settings()["ALERT_WEBHOOK_URL"]:
        return False
    return next_in_line(now or timezone.now()) is not None


def run_options():
    """The ``apply_async`` options of a run of ``tiktok_tracking.deliver_alerts`` (pure but for
    the settings): ALERT_QUEUE when set; else none, so that Celery's task_routes, or its default
    queue, decide."""
    queue = conf.readiness_settings()["ALERT_QUEUE"]
    return {"expires": RUN_EXPIRES_SECONDS, **({"queue": queue} if queue else {})}


def deliver_alerts(now=None, session=None):
    """POST the pending alerts that are due to the webhook, oldest first, one at a time;
    returns how many were sent. A failed POST ends the run: the alerts behind it wait for
    its retry. No POST starts after RUN_SECONDS."""
    now = now or timezone.now()
    settings = conf.readiness_settings()
    url, secret = settings["ALERT_WEBHOOK_URL"], settings["ALERT_WEBHOOK_SECRET"]
    if not url:
        return 0
    own_session = session is None
    session = session or webhook_session()
    started = time.monotonic()
    sent = 0
    try:
        while time.monotonic() - started < RUN_SECONDS:
            alert = next_in_line(now)
            if alert is None or not claim(alert):
                break  # nothing due, or another run (a second beat's) is posting it
            body, headers = signed_request(alert, secret)
            error = post_alert(session, url, body, headers)
            record_attempt(alert, error, now, secret)
            if error is not None:
                break
            sent += 1
    finally:
        if own_session:
            session.close()
    return sent


def record_attempt(alert, error, now, secret):
    """Store the outcome of ``alert``'s POST: sent, retried with backoff, or failed."""
    if error is None:
        alert.status, alert.sent_at, alert.last_error = ReadinessAlert.Status.SENT, now, ""
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
