"""Consent policy: whether an event may leave the shop, per lane, checked again at send time."""

from dataclasses import dataclass


@dataclass(frozen=True)
class ConsentDecision:
    allowed: bool
    reason: str = ""


ALLOWED = ConsentDecision(allowed=True)


def server_lane_decision(tracked_event):
    """Decide, at send time, whether a recorded server event may still be sent.

    Without a consent policy configured every event is allowed; a policy that can withdraw
    consent plugs in here so that a withdrawal between payment and delivery wins.
    """
    return ALLOWED
