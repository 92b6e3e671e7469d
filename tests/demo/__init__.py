"""Tests of the demo shop, each run in a subprocess under the demo's own settings."""
