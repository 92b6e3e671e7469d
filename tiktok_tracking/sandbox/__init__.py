"""A local stand-in for TikTok's Events API v1.3, for tests, benchmarks and demos."""

from tiktok_tracking.sandbox.server import SandboxServer
from tiktok_tracking.sandbox.validation import Verdict, validate_request

__all__ = ["SandboxServer", "Verdict", "validate_request"]
