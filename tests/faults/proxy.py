"""A loopback TCP proxy whose link can be cut (connection refused) or blackholed on demand.

Put between a process and TikTok or the broker, it plays the network failures a shop meets:
a service that is down (nothing listens: ``connect`` is refused and open connections are
reset) and one that accepts and then never answers (a blackhole: a dead load balancer, a
firewall dropping packets).
"""

import contextlib
import socket
import struct
import threading

from tests.latency_proxy import url_through

FORWARD = "forward"
REFUSE = "refuse"
BLACKHOLE = "blackhole"
MODES = (FORWARD, REFUSE, BLACKHOLE)
CHUNK = 65536


def _reset(sock):
    """End a connection at once, as the death of the service behind it would."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    # shutdown() first: close() alone would wait for the pump thread blocked in recv() on it.
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()


class ToggleProxy:
    """Forwards 127.0.0.1:``port`` to ``upstream`` while in FORWARD mode."""

    def __init__(self, upstream_host, upstream_port):
        self.upstream = (upstream_host, upstream_port)
        self._lock = threading.Lock()
        self._mode = FORWARD
        self._sockets = set()
        self._listener = None
        self.port = 0
        self.accepted = 0
        self._listen()

    # --- control ---

    @property
    def mode(self):
        return self._mode

    def set_mode(self, mode):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        with self._lock:
            previous, self._mode = self._mode, mode
            sockets = list(self._sockets) if mode == REFUSE else []
            if mode == REFUSE:
                self._sockets.clear()
        if mode == REFUSE and previous != REFUSE:
            self._close_listener()
        for sock in sockets:
            _reset(sock)
        if previous == REFUSE and mode != REFUSE:
            self._listen()

    def url_for(self, url):
        """``url`` with its host and port replaced by this proxy's."""
        return url_through(url, self.port)

    def close(self):
        self.set_mode(REFUSE)

    # --- serving ---

    def _listen(self):
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # The same port every time, so the clients' configured URL works again when it is back.
        listener.bind(("127.0.0.1", self.port))
        listener.listen(256)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(
            target=self._accept, args=(listener,), name=f"proxy-{self.port}", daemon=True
        ).start()

    def _close_listener(self):
        listener, self._listener = self._listener, None
        if listener is not None:
            # shutdown() wakes the thread blocked in accept(); close() alone may not.
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()

    def _accept(self, listener):
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            self.accepted += 1
            try:
                upstream = (
                    None if self._mode == BLACKHOLE else socket.create_connection(self.upstream, 5)
                )
            except OSError:
                _reset(client)
                continue
            if upstream is not None:
                upstream.settimeout(None)
            with self._lock:
                refused = self._mode == REFUSE
                if not refused:
                    self._sockets.add(client)
                    if upstream is not None:
                        self._sockets.add(upstream)
            if refused:
                # Accepted just as the service went down: it dies with the rest.
                for sock in (client, upstream):
                    if sock is not None:
                        _reset(sock)
                continue
            self._pump(client, upstream)
            if upstream is not None:
                self._pump(upstream, client)

    def _pump(self, source, target):
        threading.Thread(target=self._copy, args=(source, target), daemon=True).start()

    def _copy(self, source, target):
        try:
            while True:
                data = source.recv(CHUNK)
                if not data:
                    break
                # Blackholed: what arrives is swallowed, nothing goes on, nothing comes back.
                if target is not None and self._mode != BLACKHOLE:
                    target.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, target):
                if sock is not None:
                    with self._lock:
                        self._sockets.discard(sock)
                    with contextlib.suppress(OSError):
                        sock.close()
