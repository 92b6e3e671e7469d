"""Recording the tracking configuration whenever it changes, so the admin can show when it did."""

import hashlib
import json

from tiktok_tracking import conf


def config_fingerprint(values):
    """A stable SHA-256 of the settings (pure)."""
    encoded = json.dumps(values, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(encoded.encode("utf-8")).hexdigest()


def record_config_if_changed():
    """Store the current settings if they differ from the last record; returns the record."""
    from tiktok_tracking.models import ConfigChange

    values = json.loads(json.dumps(conf.public_settings(), default=str))
    fingerprint = config_fingerprint(values)
    latest = ConfigChange.objects.only("fingerprint").first()
    if latest is not None and latest.fingerprint == fingerprint:
        return latest
    return ConfigChange.objects.create(fingerprint=fingerprint, settings=values)
