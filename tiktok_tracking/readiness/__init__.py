"""Rule readiness: per market, whether the shop's ad automation may act on TikTok's numbers."""
