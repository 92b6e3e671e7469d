"""Tests of the optional integrations against the real packages."""
