"""A TCP proxy that adds a round-trip time, to put workers at a distance from PostgreSQL or Redis.

The kernel here has no ``netem``, so distance is played in user space: every chunk read from
either side is written to the other ``rtt / 2`` later, in order, without waiting for the chunk
before it to arrive (a link with latency, not a slow one). One asyncio loop serves every
connection. Run it in a thread (``LatencyProxy``) or as a process of its own, so that its work
does not share an interpreter lock with what it measures:

    python -m tests.latency_proxy --upstream 127.0.0.1:5432 --rtt-ms 5

which prints its port on the first line and serves until it is stopped.

The threaded proxy also counts round trips (``LatencyProxy.round_trips``): each time a client
speaks after the service has answered it, or first, is one, which is what a distance costs.
"""

import argparse
import asyncio
import collections
import contextlib
import signal
import subprocess
import sys
import threading
from urllib.parse import urlsplit, urlunsplit


class _Link(asyncio.Protocol):
    """One side of a proxied connection: what it receives goes to ``peer`` after the delay."""

    def __init__(self, delay):
        self.delay = delay
        self.transport = None
        self.peer = None
        self.pending = collections.deque()  # (when, data), oldest first
        self.timer = None
        self.closing = False
        self.early = []  # what arrived before the peer was connected

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        loop = asyncio.get_running_loop()
        self.pending.append((loop.time() + self.delay, data))
        if self.timer is None:
            self.timer = loop.call_at(self.pending[0][0], self._release)

    def _release(self):
        loop = asyncio.get_running_loop()
        self.timer = None
        while self.pending and self.pending[0][0] <= loop.time():
            _when, data = self.pending.popleft()
            if self.peer is not None and self.peer.transport is not None:
                self.peer.transport.write(data)
            else:
                self.early.append(data)
        if self.pending:
            self.timer = loop.call_at(self.pending[0][0], self._release)
        elif self.closing:
            self._close_peer()

    def eof_received(self):
        # The other side hears of the end after the data before it, and the delay.
        self.closing = True
        if not self.pending:
            asyncio.get_running_loop().call_later(self.delay, self._close_peer)
        return False

    def connection_lost(self, exc):
        self.closing = True
        if not self.pending:
            self._close_peer()

    def _close_peer(self):
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.close()


class _Counts:
    """What every connection of one proxy adds up to."""

    def __init__(self):
        self.round_trips = 0


class _UpstreamLink(_Link):
    """The service's side: its data tells the client's side it was answered."""

    def __init__(self, delay, client):
        super().__init__(delay)
        self.client = client

    def data_received(self, data):
        self.client.answered = True
        super().data_received(data)


class _ClientLink(_Link):
    """The accepted side: connects to the upstream service as soon as it is accepted."""

    def __init__(self, delay, upstream, connecting, counts):
        super().__init__(delay)
        self.upstream = upstream
        self.connecting = connecting
        self.counts = counts
        # Whether the service has spoken since the client last did (a client speaks first).
        self.answered = True

    def data_received(self, data):
        if self.answered:
            self.counts.round_trips += 1
            self.answered = False
        super().data_received(data)

    def connection_made(self, transport):
        super().connection_made(transport)
        task = asyncio.get_running_loop().create_task(self._connect())
        # The loop keeps only a weak reference to a task: hold it until it is done.
        self.connecting.add(task)
        task.add_done_callback(self.connecting.discard)

    async def _connect(self):
        loop = asyncio.get_running_loop()
        try:
            _transport, upstream_link = await loop.create_connection(
                lambda: _UpstreamLink(self.delay, self), *self.upstream
            )
        except OSError:
            self.transport.close()
            return
        upstream_link.peer, self.peer = self, upstream_link
        # What either side sent before both were connected (a server may speak first).
        for link in (self, upstream_link):
            for data in link.early:
                link.peer.transport.write(data)
            link.early.clear()


async def serve(upstream, rtt_seconds, port=0, started=None, counts=None):
    """Listen on 127.0.0.1:``port`` and forward to ``upstream`` (host, port) with ``rtt``,
    counting round trips in ``counts`` (a ``_Counts``) when given."""
    loop = asyncio.get_running_loop()
    connecting = set()
    counts = counts or _Counts()
    server = await loop.create_server(
        lambda: _ClientLink(rtt_seconds / 2, upstream, connecting, counts), "127.0.0.1", port
    )
    if started is not None:
        started(server.sockets[0].getsockname()[1])
    async with server:
        await server.serve_forever()


def url_through(url, port):
    """``url`` with its host and port replaced by 127.0.0.1:``port`` (credentials kept)."""
    parts = urlsplit(url)
    credentials, _, _ = parts.netloc.rpartition("@")
    netloc = f"{credentials}@127.0.0.1:{port}" if credentials else f"127.0.0.1:{port}"
    return urlunsplit(parts._replace(netloc=netloc))


def upstream_of(url, default_port):
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or default_port


@contextlib.contextmanager
def django_connection_through(port):
    """This process's default Django connection through the proxy on ``port`` for a block."""
    from django.db import connection

    settings = connection.settings_dict
    connection.close()
    saved = settings["HOST"], settings["PORT"]
    settings["HOST"], settings["PORT"] = "127.0.0.1", port
    try:
        yield connection
    finally:
        connection.close()
        settings["HOST"], settings["PORT"] = saved


class LatencyProxy:
    """The proxy in a thread of this process: ``.port``, ``.url_for(url)``, ``.close()``, and
    ``.round_trips`` so far over every connection."""

    def __init__(self, upstream, rtt_seconds):
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()
        self.port = None
        self.counts = _Counts()

        def started(port):
            self.port = port
            ready.set()

        self.task = None

        def run():
            asyncio.set_event_loop(self.loop)
            self.task = self.loop.create_task(
                serve(upstream, rtt_seconds, started=started, counts=self.counts)
            )
            with contextlib.suppress(asyncio.CancelledError):
                self.loop.run_until_complete(self.task)

        self.thread = threading.Thread(target=run, name="latency-proxy", daemon=True)
        self.thread.start()
        if not ready.wait(10):
            raise RuntimeError("the latency proxy did not start")

    @property
    def round_trips(self):
        return self.counts.round_trips

    def url_for(self, url):
        return url_through(url, self.port)

    def close(self):
        self.loop.call_soon_threadsafe(self.task.cancel)
        self.thread.join(timeout=10)


class LatencyProxyProcess:
    """The proxy as a process of its own: ``.port``, ``.url_for(url)``, ``.close()``."""

    def __init__(self, upstream, rtt_seconds):
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.latency_proxy",
                "--upstream",
                f"{upstream[0]}:{upstream[1]}",
                "--rtt-ms",
                str(rtt_seconds * 1000),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        line = self.process.stdout.readline().strip()
        if not line.isdigit():
            self.close()
            raise RuntimeError(f"the latency proxy did not start: {line!r}")
        self.port = int(line)

    @property
    def pid(self):
        return self.process.pid

    def url_for(self, url):
        return url_through(url, self.port)

    def close(self):
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process.stdout.close()


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m tests.latency_proxy", description=__doc__)
    parser.add_argument("--upstream", required=True, help="host:port to forward to")
    parser.add_argument("--rtt-ms", type=float, required=True, help="round trip to add, in ms")
    parser.add_argument("--port", type=int, default=0, help="port to listen on (default: any)")
    args = parser.parse_args(argv)
    host, _, port = args.upstream.rpartition(":")
    if not host or not port.isdigit() or args.rtt_ms < 0:
        parser.error("--upstream takes host:port, --rtt-ms a number of at least 0")

    def started(listening):
        print(listening, flush=True)

    async def until_stopped():
        # SIGTERM ends the serving task, and the process with status 0.
        serving = asyncio.current_task()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, serving.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await serve((host, int(port)), args.rtt_ms / 1000, args.port, started)

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(until_stopped())


if __name__ == "__main__":
    main()
