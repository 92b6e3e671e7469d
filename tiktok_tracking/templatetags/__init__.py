"""Template tags of the browser lane: ``{% load tiktok_tracking %}``."""
