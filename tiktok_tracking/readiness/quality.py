"""Estimated match quality: a 0-10 score of the match keys an event carried to TikTok.

TikTok grades the events it receives (its "event match quality") by how many of them it can tie
to a TikTok user, and that grade is not readable from the shop. This estimate reads the keys
the app actually sent, each weighted by how surely it identifies the person who saw the ad
(the weights are justified in docs/readiness.md):

- the click id (``ttclid``) ties the purchase to the very ad click: the strongest key;
- a hashed email or phone identifies the person on any device;
- the shop's customer id (``external_id``) matches only where the pixel sent the same id;
- the ``_ttp`` cookie identifies the browser that saw the ad, on that device only;
- ip and user agent match only together and only probabilistically.

The page URL goes with every event but identifies no one: it is not scored.

A market's score is the mean of its events' scores, which is the sum of each key's weight times
the share of events that carried it: rollups of key counts are enough to compute it.
"""

# The keys are events.MATCH_KEYS, the ones the outbox and the rollups count.
WEIGHTS = {
    "ttclid": 2.5,
    "email": 2.5,
    "phone": 2.0,
    "external_id": 1.0,
    "ttp": 1.0,
    "ip": 0.5,
    "user_agent": 0.5,
}
# The weights add up to it (tests/test_readiness_core.py holds them to it).
MAX_SCORE = 10.0


def event_score(keys):
    """The score of one event that carried the match keys ``keys`` (names of ``WEIGHTS``)."""
    unknown = set(keys) - WEIGHTS.keys()
    if unknown:
        raise ValueError(f"unknown match keys: {', '.join(sorted(unknown))}")
    return round(sum(WEIGHTS[key] for key in set(keys)), 1)


def mask_score(mask):
    """The score of one event from its ``match_keys`` bitmask (bit i = ``MATCH_KEYS[i]``)."""
    from tiktok_tracking.events import MATCH_KEYS

    return event_score([key for bit, key in enumerate(MATCH_KEYS) if mask & (1 << bit)])


def market_score(events, with_key):
    """The mean score of ``events`` events, ``with_key[key]`` of which carried ``key``.

    None when there were no events: no score, rather than a score of 0.
    """
    if events <= 0:
        return None
    for key, count in with_key.items():
        if key not in WEIGHTS:
            raise ValueError(f"unknown match key: {key}")
        if not 0 <= count <= events:
            raise ValueError(f"{key}: {count} events with it out of {events}")
    return round(sum(WEIGHTS[key] * count / events for key, count in with_key.items()), 1)


def missing_keys_by_weight(events, with_key):
    """The keys most events went without, heaviest first: what would raise the score most."""
    if events <= 0:
        return []
    gains = {key: weight * (1 - with_key.get(key, 0) / events) for key, weight in WEIGHTS.items()}
    return [key for key, gain in sorted(gains.items(), key=lambda item: -item[1]) if gain > 0]
