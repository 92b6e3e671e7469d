"""System checks: misconfiguration shows up in ``manage.py check`` as tiktok_tracking.E00x/W00x."""

from django.apps import apps
from django.core import checks
from django.utils.module_loading import import_string

from tiktok_tracking import conf
from tiktok_tracking.events import is_valid_event_name
from tiktok_tracking.standards import MAX_BATCH_SIZE

# TikTok deduplicates repeats of one event_id for 48 h; retries must stop well before that.
DEDUP_WINDOW_HOURS = 48


def register():
    checks.register(check_settings, checks.Tags.compatibility)
    checks.register(check_broker, checks.Tags.compatibility)


def _error(id_, msg, hint=None, warning=False):
    cls = checks.Warning if warning else checks.Error
    return cls(msg, hint=hint, id=f"tiktok_tracking.{id_}")


def check_settings(app_configs=None, **kwargs):
    user = conf.user_settings()
    errors = []
    if not isinstance(user, dict):
        return [_error("E000", f"{conf.SETTING_NAME} must be a dict.")]
    required = (
        ("E001", "PIXEL_ID", "Set it to the pixel code from TikTok Events Manager."),
        ("E002", "ACCESS_TOKEN", "Read it from the environment; never commit it."),
    )
    for id_, key, hint in required:
        if not conf.get(key):
            errors.append(_error(id_, f"{conf.SETTING_NAME}[{key!r}] is not set.", hint=hint))
    if not is_valid_event_name(conf.get("PURCHASE_EVENT")):
        errors.append(
            _error(
                "E003",
                f"{conf.SETTING_NAME}['PURCHASE_EVENT'] = {conf.get('PURCHASE_EVENT')!r} "
                "is not a TikTok standard event.",
                hint="Use 'Purchase' (or the legacy 'CompletePayment').",
            )
        )
    adapter_path = conf.get("ORDER_ADAPTER")
    try:
        adapter = import_string(adapter_path)
    except ImportError as exc:
        errors.append(
            _error("E004", f"{conf.SETTING_NAME}['ORDER_ADAPTER'] cannot be imported: {exc}")
        )
    else:
        from tiktok_tracking.adapters import OrderAdapter

        if not (isinstance(adapter, type) and issubclass(adapter, OrderAdapter)):
            errors.append(
                _error(
                    "E004",
                    f"{conf.SETTING_NAME}['ORDER_ADAPTER'] = {adapter_path!r} "
                    "is not a subclass of tiktok_tracking.adapters.OrderAdapter.",
                )
            )
    errors.extend(_check_numbers())
    unknown = sorted(set(user) - set(conf.DEFAULTS))
    if unknown:
        errors.append(
            _error(
                "W001",
                f"{conf.SETTING_NAME} has unknown key(s): {', '.join(unknown)}.",
                hint="Check the spelling against the settings reference.",
                warning=True,
            )
        )
    if not apps.is_installed("django_celery_beat"):
        errors.append(
            _error(
                "W002",
                "django_celery_beat is not in INSTALLED_APPS: nothing will sweep the outbox.",
                hint="Add 'django_celery_beat' and run a beat process with its "
                "DatabaseScheduler, or schedule tiktok_tracking.sweep_outbox yourself.",
                warning=True,
            )
        )
    return errors


def _check_numbers():
    errors = []
    batch_size = conf.get("BATCH_SIZE")
    if not isinstance(batch_size, int) or not 1 <= batch_size <= MAX_BATCH_SIZE:
        errors.append(
            _error(
                "E006",
                f"{conf.SETTING_NAME}['BATCH_SIZE'] must be an integer from 1 to "
                f"{MAX_BATCH_SIZE}, not {batch_size!r}.",
            )
        )
    hours = conf.get("MAX_RETRY_HOURS")
    if not isinstance(hours, int | float) or not 0 < hours < DEDUP_WINDOW_HOURS:
        errors.append(
            _error(
                "E007",
                f"{conf.SETTING_NAME}['MAX_RETRY_HOURS'] must be above 0 and below "
                f"{DEDUP_WINDOW_HOURS} (TikTok's dedup window), not {hours!r}.",
            )
        )
    for key in ("TIMEOUT", "RETRY_BASE_DELAY", "RETRY_MAX_DELAY", "LEASE_SECONDS"):
        value = conf.get(key)
        if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
            errors.append(
                _error("E008", f"{conf.SETTING_NAME}[{key!r}] must be a positive number.")
            )
            return errors
    if conf.get("LEASE_SECONDS") <= 2 * conf.get("TIMEOUT"):
        errors.append(
            _error(
                "E009",
                f"{conf.SETTING_NAME}['LEASE_SECONDS'] must exceed twice TIMEOUT, or the "
                "sweeper will take rows back from workers that are still sending them.",
            )
        )
    return errors


def check_broker(app_configs=None, **kwargs):
    from celery import current_app

    if not current_app.conf.broker_url:
        return [
            _error(
                "E005",
                "No Celery broker is configured: purchase events would never be delivered.",
                hint="Load your Celery app in your project's __init__.py and set "
                "CELERY_BROKER_URL (see the README).",
            )
        ]
    return []
