"""``python -m demo_shop.selfcheck``: one purchase through the whole demo, exit 0 if tracked."""

# Migrates and seeds the configured database, starts the TikTok sandbox and the shop (for the
# gateway's webhook) on free local ports, then browses, adds to the cart, checks out, pays at the
# gateway and comes back with Django's test Client. Run it with DEMO_EAGER=1 and a scratch
# DATABASE_URL: the webhook and the TikTok delivery then run inside the requests, no worker needed.

from __future__ import annotations

import io
import os
import re
import sys
import threading
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args):
        pass


def _fail(message: str) -> int:
    print(f"selfcheck FAILED: {message}", file=sys.stderr)
    return 1


def _start_shop(application) -> WSGIServer:
    server = make_server("127.0.0.1", 0, application, handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def main() -> int:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "demo_shop.settings")
    # Settings read the environment once, so the sandbox must be up before Django starts.
    from tiktok_tracking.sandbox.server import SandboxServer

    sandbox = SandboxServer("127.0.0.1", 0).start()
    os.environ["TIKTOK_API_URL"] = sandbox.events_url
    shop = None
    try:
        import django

        django.setup()
        from django.conf import settings
        from django.core.management import call_command
        from django.core.wsgi import get_wsgi_application
        from django.test import Client
        from django.test.utils import setup_test_environment

        if not settings.CELERY_TASK_ALWAYS_EAGER:
            return _fail("run it with DEMO_EAGER=1: no worker runs during the selfcheck")
        setup_test_environment()
        shop = _start_shop(get_wsgi_application())
        settings.DEMO_SITE_URL = f"http://127.0.0.1:{shop.server_port}"
        call_command("migrate", verbosity=0, interactive=False)
        call_command("seed_demo", stdout=io.StringIO())
        return _purchase(Client(enforce_csrf_checks=True))
    finally:
        if shop is not None:
            shop.shutdown()
        sandbox.stop()


def _csrf(client, response) -> str:
    match = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', response.content)
    return match.group(1).decode() if match else client.cookies["csrftoken"].value


def _purchase(client) -> int:
    from demo_shop.store.models import Order, Product
    from tiktok_tracking.models import TrackedEvent

    product = Product.objects.order_by("sku").first()
    if product is None:
        return _fail("seed_demo created no products")
    page = client.get("/")
    if page.status_code != 200 or product.name.encode() not in page.content:
        return _fail(f"catalog answered {page.status_code}")
    token = _csrf(client, page)
    # An EU shopper who accepts tracking, so both lanes may send.
    client.post("/country/", {"country": "DE", "csrfmiddlewaretoken": token})
    consent = client.post("/tiktok/consent/", {"status": "granted"}, headers={"X-CSRFToken": token})
    if consent.status_code != 200:
        return _fail(f"consent endpoint answered {consent.status_code}")
    page = client.get(f"/products/{product.sku}/")
    if b'"ViewContent"' not in page.content:
        return _fail("the product page has no ViewContent event")
    added = client.post(
        "/cart/add/",
        {"sku": product.sku, "quantity": "2", "csrfmiddlewaretoken": _csrf(client, page)},
        follow=True,
    )
    if b'"AddToCart"' not in added.content:
        return _fail("the cart page has no AddToCart event")
    form = client.get("/checkout/")
    handoff = client.post(
        "/checkout/",
        {
            "email": "shopper@example.com",
            "phone": "+49 30 1234567",
            "country": "DE",
            "csrfmiddlewaretoken": _csrf(client, form),
        },
        follow=True,
    )
    if b'"InitiateCheckout"' not in handoff.content:
        return _fail(f"checkout did not reach the hand-off page ({handoff.status_code})")
    gateway_url = handoff.context["gateway_url"]
    order = handoff.context["order"]
    gateway = client.get(gateway_url)
    if b"Pay now" not in gateway.content:
        return _fail("the gateway page has no Pay now button")
    thanks = client.post(gateway_url, {"csrfmiddlewaretoken": _csrf(client, gateway)}, follow=True)
    if thanks.status_code != 200 or b'"Purchase"' not in thanks.content:
        return _fail(f"the thank-you page has no Purchase event ({thanks.status_code})")
    order = Order.objects.get(pk=order.pk)
    if not order.is_paid:
        return _fail(f"the webhook did not mark order {order.number} paid")
    event = TrackedEvent.objects.filter(event="Purchase", event_id=f"order_{order.number}").first()
    if event is None:
        return _fail(f"no Purchase TrackedEvent with event_id order_{order.number}")
    problem = _webhook_guards(order.number)
    if problem:
        return _fail(problem)
    print(f"selfcheck OK: order {order.number} paid, Purchase {event.event_id} {event.status}")
    return 0


def _webhook_guards(number: str) -> str | None:
    """A forged notice is refused and a repeated one changes nothing; else what went wrong."""
    from django.test import Client

    from demo_shop.store.tasks import SIGNATURE_HEADER, sign, webhook_body
    from tiktok_tracking.models import TrackedEvent

    gateway = Client()
    body = webhook_body(number)
    forged = gateway.post(
        "/gateway/webhook/",
        body,
        content_type="application/json",
        headers={SIGNATURE_HEADER: sign(b"something else")},
    )
    if forged.status_code != 403:
        return f"a forged webhook got HTTP {forged.status_code}"
    events_before = TrackedEvent.objects.count()
    again = gateway.post(
        "/gateway/webhook/",
        body,
        content_type="application/json",
        headers={SIGNATURE_HEADER: sign(body)},
    )
    if again.status_code != 200 or not again.json().get("already_paid"):
        return f"a repeated webhook answered {again.status_code} {again.content!r}"
    if TrackedEvent.objects.count() != events_before:
        return "a repeated webhook recorded another event"
    return None


if __name__ == "__main__":
    sys.exit(main())
