"""Browser tests: real headless Chromium driving pages that load the TikTok pixel."""
