"""Run the TikTok Events API sandbox from the command line until Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from types import FrameType

from tiktok_tracking.sandbox.server import SandboxServer


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tiktok_tracking.sandbox",
        description="Local stand-in for TikTok's Events API v1.3 track endpoint.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8765, help="port (0 picks a free one)")
    parser.add_argument(
        "--token",
        default=os.environ.get("TIKTOK_SANDBOX_TOKEN") or None,
        help="the only Access-Token accepted (default: $TIKTOK_SANDBOX_TOKEN, else any)",
    )
    parser.add_argument(
        "--pixel",
        dest="pixels",
        action="extend",
        nargs="+",
        metavar="ID",
        help="pixel codes the token may send to (repeatable; default: any)",
    )
    parser.add_argument(
        "--pixel-token",
        dest="pixel_tokens",
        action="append",
        type=_pixel_token,
        metavar="PIXEL=TOKEN",
        help="a pixel and its own Access-Token (repeatable); only those pixels are accepted",
    )
    parser.add_argument(
        "--latency", type=float, default=0.0, help="seconds to wait before every answer"
    )
    parser.add_argument(
        "--max-body-bytes",
        type=int,
        default=None,
        metavar="BYTES",
        help="answer track requests with a longer body HTTP 413 and an HTML page, as a proxy "
        "(nginx's client_max_body_size) does; default: no limit but the sandbox's own",
    )
    parser.add_argument("--verbose", action="store_true", help="log every request to stderr")
    parser.add_argument(
        "--store",
        metavar="FILE",
        help="keep what was received in FILE (JSON lines) across restarts; default: memory",
    )
    return parser.parse_args(argv)


def _pixel_token(text: str) -> tuple[str, str]:
    pixel, separator, token = text.partition("=")
    if not separator or not pixel or not token:
        raise argparse.ArgumentTypeError(f"expected PIXEL=TOKEN, got {text.split('=')[0]!r}=...")
    return pixel, token


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    try:
        server = SandboxServer(
            args.host,
            args.port,
            token=args.token,
            pixels=args.pixels,
            tokens=dict(args.pixel_tokens or ()),
            latency=args.latency,
            verbose=args.verbose,
            store=args.store,
            max_body_bytes=args.max_body_bytes,
        )
    except (OSError, ValueError) as exc:
        print(f"Cannot start the sandbox on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1

    # Both set explicitly: a shell starting us with "&" would otherwise leave SIGINT ignored.
    previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    # The first stdout line is the base URL alone, so scripts can read the port chosen.
    print(server.url, flush=True)
    if args.pixel_tokens:
        header_rule = "each pixel's own, from --pixel-token"
    elif args.token:
        header_rule = "checked against --token"
    else:
        header_rule = "any non-empty value accepted"
    pixels = args.pixels or [pixel for pixel, _ in args.pixel_tokens or ()]
    pixel_rule = ", ".join(pixels) if pixels else "any"
    print(
        f"POST events to {server.events_url} (Access-Token: {header_rule}; pixels: {pixel_rule})."
        " Ctrl-C to stop.",
        file=sys.stderr,
        flush=True,
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


if __name__ == "__main__":
    sys.exit(main())
