"""Browser receipts: a signed token per rendered event, and recording that the pixel fired it."""

from functools import lru_cache

from django.conf import settings
from django.core import signing
from django.db import IntegrityError, transaction
from django.utils import timezone

from tiktok_tracking import conf
from tiktok_tracking.events import RANDOM_EVENT_ID_PREFIX

SALT = "tiktok_tracking.receipt"


class InvalidReceipt(ValueError):
    """The token is forged, malformed or expired."""


def receipt_token(pixel_id, event, event_id):
    """A token the page sends back to prove this server rendered this event (HMAC, timestamped)."""
    return _signer(settings.SECRET_KEY, tuple(settings.SECRET_KEY_FALLBACKS)).sign_object(
        [pixel_id, event, event_id]
    )


@lru_cache(maxsize=4)
def _signer(secret_key, fallbacks):
    # One signer per key set: a changed SECRET_KEY (rotation, tests) gets a signer of its own.
    return signing.TimestampSigner(key=secret_key, fallback_keys=fallbacks, salt=SALT)


def read_receipt_token(token, max_age=None):
    """The (pixel_id, event, event_id) a token was signed for; InvalidReceipt otherwise."""
    max_age = conf.get("RECEIPT_MAX_AGE_SECONDS") if max_age is None else max_age
    try:
        value = signing.TimestampSigner(salt=SALT).unsign_object(token, max_age=max_age)
    except signing.SignatureExpired as exc:
        raise InvalidReceipt("expired") from exc
    except (signing.BadSignature, ValueError, TypeError) as exc:
        raise InvalidReceipt("bad signature") from exc
    if not (isinstance(value, list) and len(value) == 3 and all(isinstance(v, str) for v in value)):
        raise InvalidReceipt("malformed")
    return tuple(value)


def record_receipt(pixel_id, event, event_id, now=None):
    """Record that the browser fired this event; False if it was already recorded (a replay).

    An event of no order (its event_id random) is counted in its day's tally instead: it has no
    server row to mark, and a row each would grow with page views. Its replays are not told
    apart within the token's life: they count again, in the tally only.
    """
    from tiktok_tracking.models import EVENT_TABLES, BrowserReceipt

    now = now or timezone.now()
    if event_id.startswith(RANDOM_EVENT_ID_PREFIX):
        tally_receipt(pixel_id, event, timezone.localdate(now))
        return True
    try:
        with transaction.atomic():
            BrowserReceipt.objects.create(
                pixel_id=pixel_id, event=event, event_id=event_id, received_at=now
            )
    except IntegrityError:
        return False
    # The server row may not exist yet (the payment webhook often arrives after the thank-you
    # page); the receiver copies the receipt's time when it creates the row.
    for model in EVENT_TABLES:
        model.objects.filter(
            pixel_id=pixel_id, event=event, event_id=event_id, browser_seen_at__isnull=True
        ).update(browser_seen_at=now)
    return True


def tally_receipt(pixel_id, event, day):
    """Count one receipt in the day's tally of ``event`` for ``pixel_id`` (safe under races)."""
    from django.db.models import F

    from tiktok_tracking.models import ReceiptTally

    key = {"day": day, "pixel_id": pixel_id, "event": event}
    if ReceiptTally.objects.filter(**key).update(receipts=F("receipts") + 1):
        return
    try:
        with transaction.atomic():
            ReceiptTally.objects.create(receipts=1, **key)
    except IntegrityError:
        # Another request created the day's tally first: count on it.
        ReceiptTally.objects.filter(**key).update(receipts=F("receipts") + 1)
