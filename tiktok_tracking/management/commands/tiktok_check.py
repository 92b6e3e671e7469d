"""``manage.py tiktok_check``: the app's system checks, its settings, and a test Purchase."""

from decimal import Decimal

from django.core import checks
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from tiktok_tracking import __version__, conf
from tiktok_tracking.checks import check_recent_orders
from tiktok_tracking.client import DELIVERED, TRANSIENT, configured_client
from tiktok_tracking.events import BrowserContext, OrderFacts, build_event, build_request_body
from tiktok_tracking.exceptions import TikTokTrackingImproperlyConfigured
from tiktok_tracking.hashing import hash_external_id
from tiktok_tracking.pixels import configured_pixels, named_pixel
from tiktok_tracking.standards import CODE_NO_PERMISSION

CHECK_ID_PREFIX = "tiktok_tracking."
# The tag every check in tiktok_tracking/checks.py is registered under.
CHECK_TAGS = (checks.Tags.compatibility,)

TEST_ORDER_PREFIX = "tiktok-check-"
TEST_PRODUCT_ID = "tiktok-check"
TEST_VALUE = Decimal("1.00")
TEST_CURRENCY = "USD"

LEVEL_NAMES = {
    checks.DEBUG: "DEBUG",
    checks.INFO: "INFO",
    checks.WARNING: "WARNING",
    checks.ERROR: "ERROR",
    checks.CRITICAL: "CRITICAL",
}


def app_check_messages():
    """The app's system check messages (errors and warnings), silenced ones left out."""
    return [
        message
        for message in checks.run_checks(tags=list(CHECK_TAGS))
        if (message.id or "").startswith(CHECK_ID_PREFIX) and not message.is_silenced()
    ]


def format_check_message(message):
    """One check message as the command prints it (pure)."""
    level = LEVEL_NAMES.get(message.level, str(message.level))
    line = f"  {level} {message.id}: {message.msg}"
    if message.hint:
        line += f"\n      hint: {message.hint}"
    return line


def format_setting(value):
    """A setting's value on one line: sequences joined with commas, the rest as repr (pure)."""
    if isinstance(value, (list, tuple, set, frozenset)):
        return ", ".join(str(item) for item in value) or "(empty)"
    return repr(value)


def synthetic_order_id(now):
    """The id of the synthetic order, plainly a test and unique per second (pure)."""
    return f"{TEST_ORDER_PREFIX}{now:%Y%m%d%H%M%S}"


def build_test_body(pixel_id, test_event_code, *, now, event_name, partner_name=None):
    """``(body, event_id)`` of a realistic one-event request for a synthetic test order (pure).

    Built by the same functions as real purchases; the match key is a hashed synthetic customer
    id, never a real person's email or phone.
    """
    facts = OrderFacts(
        order_id=synthetic_order_id(now),
        value=TEST_VALUE,
        currency=TEST_CURRENCY,
        contents=(
            {
                "content_id": TEST_PRODUCT_ID,
                "content_name": "tiktok_check test product",
                "quantity": 1,
                "price": TEST_VALUE,
            },
        ),
        external_id_sha256=hash_external_id(TEST_PRODUCT_ID),
    )
    context = BrowserContext(user_agent=f"django-tiktok-tracking/{__version__} tiktok_check")
    item = build_event(event_name, facts, event_time=now, context=context)
    body = build_request_body(
        pixel_id, [item], test_event_code=test_event_code, partner_name=partner_name
    )
    return body, item["event_id"]


def verdict(outcome):
    """One line saying what TikTok's answer means for the test event (pure)."""
    if outcome.kind == DELIVERED:
        return "delivered: TikTok accepted the test event; look for it under Test events."
    reason = outcome.message or "no message"
    if outcome.code is not None:
        reason = f"{reason} (code {outcome.code})"
    elif outcome.http_status is not None:
        reason = f"{reason} (HTTP {outcome.http_status})"
    if outcome.kind == TRANSIENT:
        return f"transient: {reason}; TikTok may accept it later, try again."
    if outcome.code == CODE_NO_PERMISSION:
        reason += "; check ACCESS_TOKEN and PIXEL_ID"
    return f"rejected: {reason}"


def format_answer(outcome):
    """TikTok's answer to the test event, one field per line (pure)."""
    return [
        f"  HTTP status: {outcome.http_status if outcome.http_status is not None else '-'}",
        f"  code: {outcome.code if outcome.code is not None else '-'}",
        f"  message: {outcome.message or '-'}",
        f"  request_id: {outcome.request_id or '-'}",
        f"  took: {outcome.duration_ms} ms",
    ]


class Command(BaseCommand):
    help = (
        "Run the TikTok tracking system checks and print the effective settings (access token "
        "masked). With --send-test-event, send one test Purchase with the test event code and "
        "print TikTok's answer."
    )
    # The checks are the point of this command: it runs them itself and prints them its way.
    requires_system_checks = []

    def add_arguments(self, parser):
        parser.add_argument(
            "--send-test-event",
            action="store_true",
            help="Send one synthetic Purchase to the Events API with the test event code, to "
            "each pixel.",
        )
        parser.add_argument(
            "--test-event-code",
            metavar="CODE",
            help="With --send-test-event: the test event code from Events Manager "
            "(default: each pixel's TEST_EVENT_CODE).",
        )
        parser.add_argument(
            "--pixel",
            metavar="ID",
            help="With --send-test-event: only this pixel (default: every configured pixel).",
        )

    def handle(self, *args, **options):
        sending = options["send_test_event"]
        targets = self.test_targets(options["pixel"], options["test_event_code"]) if sending else []

        messages = app_check_messages()
        errors = [message for message in messages if message.is_serious()]
        if not errors:
            messages += self.recent_order_messages()
        self.stdout.write("System checks:")
        for message in messages:
            style = self.style.ERROR if message.is_serious() else self.style.WARNING
            self.stdout.write(format_check_message(message), style)
        if not messages:
            self.stdout.write("  no problems found", self.style.SUCCESS)

        self.stdout.write("Settings:")
        for key, value in conf.public_settings().items():
            self.stdout.write(f"  {key} = {format_setting(value)}")

        if errors:
            raise CommandError(
                f"The TikTok tracking configuration has {len(errors)} error(s); "
                + ("fix them before sending a test event." if sending else "see above.")
            )
        refused = {}
        for pixel, code in targets:
            outcome = self.send_test_event(pixel, code)
            if outcome.kind != DELIVERED:
                refused[pixel.pixel_id] = verdict(outcome)
        if len(targets) == 1 and refused:
            raise CommandError(f"The test event was not accepted: {next(iter(refused.values()))}")
        if refused:
            raise CommandError(
                "The test event was not accepted: "
                + "; ".join(f"pixel {pixel_id}: {text}" for pixel_id, text in refused.items())
            )

    def recent_order_messages(self):
        """W005 for the latest paid orders (``PAID_ORDERS``) whose lines do not add up to their
        value; a shop's report that fails is said so, not raised: the rest still runs."""
        try:
            messages = check_recent_orders()
        except Exception as exc:
            self.stderr.write(f"Could not read recent paid orders through PAID_ORDERS: {exc!r}")
            return []
        return [message for message in messages if not message.is_silenced()]

    def test_targets(self, only_pixel, test_event_code):
        """``[(pixel, test_event_code)]`` to send a test event to; an error says what is missing.

        Empty when no pixel can be read from the settings: the system checks say why.
        """
        try:
            pixels = configured_pixels()
        except TikTokTrackingImproperlyConfigured:
            return []
        if only_pixel:
            try:
                pixels = [named_pixel(pixels, only_pixel)]
            except TikTokTrackingImproperlyConfigured as exc:
                raise CommandError(str(exc)) from None
        targets = [(pixel, test_event_code or pixel.test_event_code) for pixel in pixels]
        # Without a test code the event would count as a real purchase in the ad account.
        without = [pixel.pixel_id for pixel, code in targets if not code]
        if without:
            where = (
                f"{conf.SETTING_NAME}['TEST_EVENT_CODE'] is not set"
                if conf.get("PIXELS") is None
                else f"TEST_EVENT_CODE is not set in PIXELS for pixel(s) {', '.join(without)}"
            )
            raise CommandError(
                f"{where}: set it to the code from Events Manager > Test events, or pass "
                "--test-event-code CODE."
            )
        return targets

    def send_test_event(self, pixel, test_event_code):
        """Send one test Purchase to ``pixel``, print TikTok's answer and return its Outcome."""
        now = timezone.now()
        body, event_id = build_test_body(
            pixel.pixel_id,
            test_event_code,
            now=now,
            event_name=conf.get("PURCHASE_EVENT"),
            partner_name=conf.get("PARTNER_NAME") or None,
        )
        client = configured_client()
        try:
            outcome = client.send(body, pixel.access_token)
        finally:
            client.close()
        self.stdout.write(
            f"Test event: {conf.get('PURCHASE_EVENT')} {event_id} to pixel {pixel.pixel_id} at "
            f"{conf.get('API_URL')} with test_event_code {test_event_code}"
        )
        for line in format_answer(outcome):
            self.stdout.write(line)
        line = f"Verdict: {verdict(outcome)}"
        self.stdout.write(
            line, self.style.SUCCESS if outcome.kind == DELIVERED else self.style.ERROR
        )
        return outcome
