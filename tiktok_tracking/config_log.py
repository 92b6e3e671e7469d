"""Recording the tracking configuration whenever it changes, and naming what changed.

The record holds the public settings: every access token only as set or not set, with a short
digest of it so that a replaced token shows as a change (``token_digest``). The settings a
change of which breaks tracking on the spot (``WATCHED``) are named in words by
``tracking_changes``, which the readiness task turns into alerts.
"""

import hashlib
import json

from tiktok_tracking import conf

# The settings whose change alone can stop TikTok counting purchases, or double them.
CONSENT_KEYS = (
    "CONSENT_OPT_IN_COUNTRIES",
    "CONSENT_LIMITED_DATA_USE_COUNTRIES",
    "UNKNOWN_COUNTRY_POLICY",
    "CONSENT_POLICY_VERSION",
)
WATCHED = (
    "ACCESS_TOKEN",
    "PIXEL_ID",
    "PIXELS",
    "TEST_EVENT_CODE",
    "ENABLED",
    "PURCHASE_EVENT",
    *CONSENT_KEYS,
)
DIGEST_LENGTH = 8


def config_fingerprint(values):
    """A stable SHA-256 of the settings (pure)."""
    encoded = json.dumps(values, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(encoded.encode("utf-8")).hexdigest()


def token_digest(token):
    """``set, digest 1a2b3c4d`` for a token, ``not set`` for none (pure).

    Eight hex digits of a SHA-256 tell two tokens apart and say nothing usable of either: a
    token is far too long to be guessed from 32 bits. Unkeyed, so that rotating SECRET_KEY does
    not look like a new token.
    """
    if not token:
        return "not set"
    digest = hashlib.sha256(b"tiktok_tracking.access_token:" + str(token).encode("utf-8"))
    return f"set, digest {digest.hexdigest()[:DIGEST_LENGTH]}"


def recorded_settings():
    """The settings as a change record stores them: public, tokens as digests, through JSON."""
    values = conf.public_settings()
    values["ACCESS_TOKEN"] = token_digest(conf.get("ACCESS_TOKEN"))
    pixels = conf.get("PIXELS")
    if isinstance(pixels, list | tuple) and isinstance(values["PIXELS"], list):
        values["PIXELS"] = [
            {**shown, "ACCESS_TOKEN": token_digest(given.get("ACCESS_TOKEN"))}
            if isinstance(shown, dict) and isinstance(given, dict)
            else shown
            for shown, given in zip(values["PIXELS"], pixels, strict=True)
        ]
    return json.loads(json.dumps(values, default=str))


def current_fingerprint():
    """The fingerprint a change record would carry for the settings in force now."""
    return config_fingerprint(recorded_settings())


def record_config_if_changed():
    """Store the current settings if they differ from the last record; returns the record."""
    from tiktok_tracking.models import ConfigChange

    values = recorded_settings()
    fingerprint = config_fingerprint(values)
    latest = ConfigChange.objects.only("fingerprint").first()
    if latest is not None and latest.fingerprint == fingerprint:
        return latest
    return ConfigChange.objects.create(fingerprint=fingerprint, settings=values)


def _shown(value):
    if value in (None, "", [], ()):
        return "none"
    if isinstance(value, list | tuple):
        return ", ".join(map(str, value))
    return repr(value)


def _pixel_changes(before, after):
    """The pixels added, removed, or given another token (pure)."""
    if not all(isinstance(entry, dict) for entry in [*(before or ()), *(after or ())]):
        return ["PIXELS changed"]
    old = {entry.get("PIXEL_ID"): entry for entry in before or ()}
    new = {entry.get("PIXEL_ID"): entry for entry in after or ()}
    reasons = [f"pixel {pixel} added" for pixel in sorted(set(new) - set(old), key=str)]
    reasons += [f"pixel {pixel} removed" for pixel in sorted(set(old) - set(new), key=str)]
    for pixel in sorted(set(old) & set(new), key=str):
        if not _same_token(old[pixel].get("ACCESS_TOKEN"), new[pixel].get("ACCESS_TOKEN")):
            reasons.append(f"access token of pixel {pixel} {_token_change(old[pixel], new[pixel])}")
        elif {**old[pixel], "ACCESS_TOKEN": ""} != {**new[pixel], "ACCESS_TOKEN": ""}:
            reasons.append(f"pixel {pixel} changed")
    return reasons


def _same_token(old, new):
    if old == new:
        return True
    # A record from before tokens had a digest says only "set": it cannot tell, so no alert.
    return "set" in (old, new) and all(value == "set" or _digested(value) for value in (old, new))


def _digested(value):
    return isinstance(value, str) and value.startswith("set, digest ")


def _token_change(before, after):
    old, new = before.get("ACCESS_TOKEN"), after.get("ACCESS_TOKEN")
    if new == "not set":
        return "removed"
    return "set" if old in (None, "not set") else "replaced"


def tracking_changes(before, after):
    """The changes to the watched settings from one record's settings to the next, in words;
    empty when none of them changed (pure)."""
    reasons = []
    for key in WATCHED:
        old, new = before.get(key), after.get(key)
        if old == new or (key == "ACCESS_TOKEN" and _same_token(old, new)):
            continue
        if key == "ACCESS_TOKEN":
            reasons.append(f"access token {_token_change(before, after)}")
        elif key == "PIXELS":
            reasons.extend(_pixel_changes(old, new))
        elif key == "TEST_EVENT_CODE":
            reasons.append(
                "TEST_EVENT_CODE set: TikTok files the server's events under its test tool, "
                "where ads and rules do not count them"
                if new
                else "TEST_EVENT_CODE removed"
            )
        elif key == "ENABLED":
            reasons.append("server lane switched " + ("on" if new else "off (ENABLED = False)"))
        elif key in CONSENT_KEYS:
            reasons.append(f"consent policy: {key} changed from {_shown(old)} to {_shown(new)}")
        else:
            reasons.append(f"{key} changed from {_shown(old)} to {_shown(new)}")
    return reasons
