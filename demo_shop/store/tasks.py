"""The fake payment gateway's side: it confirms payments to the shop by a signed webhook."""

import hashlib
import hmac
import json
import logging

import requests
from celery import shared_task
from django.conf import settings
from django.urls import reverse

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Gateway-Signature"
# How long the gateway waits before it tries a failed webhook again; the shop's 503 for a busy
# database asks for the same in its Retry-After header.
RETRY_SECONDS = 5


def sign(body: bytes) -> str:
    """The signature a webhook body carries: HMAC-SHA256 with the shared secret, in hex."""
    secret = settings.GATEWAY_WEBHOOK_SECRET.encode()
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def verify(body: bytes, signature: str) -> bool:
    """Whether ``signature`` is the one ``body`` must carry (compared in constant time)."""
    return hmac.compare_digest(sign(body), signature or "")


def webhook_body(number: str) -> bytes:
    return json.dumps({"type": "payment.succeeded", "order": number}, sort_keys=True).encode()


@shared_task(
    name="store.tasks.deliver_gateway_webhook",
    bind=True,
    acks_late=True,
    ignore_result=True,
    max_retries=5,
)
def deliver_gateway_webhook(self, number):
    """POST the signed "payment succeeded" notice for order ``number`` to the shop.

    Retried like a real gateway retries: the shop may be restarting when it arrives.
    """
    body = webhook_body(number)
    url = settings.DEMO_SITE_URL.rstrip("/") + reverse("gateway_webhook")
    try:
        response = requests.post(
            url,
            data=body,
            headers={"Content-Type": "application/json", SIGNATURE_HEADER: sign(body)},
            timeout=10,
        )
        response.raise_for_status()
    except requests.RequestException as exc:
        logger.warning("Gateway webhook for %s failed (%s), retrying", number, exc)
        raise self.retry(exc=exc, countdown=RETRY_SECONDS) from exc
    logger.info("Gateway webhook for %s delivered: HTTP %s", number, response.status_code)
