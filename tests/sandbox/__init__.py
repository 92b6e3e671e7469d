"""Tests of the local TikTok Events API sandbox."""
