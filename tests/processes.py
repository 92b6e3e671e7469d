"""Real ``celery worker`` and ``celery beat`` processes on the test project, for tests and benches.

No pytest here: the benchmarks start the same processes the tests do.
"""

import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORKER_READY = " ready."
BEAT_READY = "beat: Starting..."


def free_port():
    """A port nothing listens on now, on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def listening(port, host="127.0.0.1"):
    """Whether something accepts connections on ``host:port``."""
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex((host, port)) == 0


class ProcessFailed(RuntimeError):
    """A process exited, or did not become ready, in time; the message carries its log."""


def terminate(process, timeout=15):
    """SIGTERM ``process`` (a Popen) and wait; SIGKILL it if it outlives ``timeout`` seconds."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def poll_until(predicate, timeout=20.0, interval=0.05, message="condition"):
    """Poll ``predicate`` until it returns something truthy; TimeoutError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"Timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


class CeleryProcess:
    """A real ``celery worker`` or ``celery beat`` process running the test settings."""

    def __init__(self, kind, args, env, log_path, root=ROOT):
        self.kind = kind
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [*CELERY_COMMAND, kind, *args],
            cwd=root,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    @property
    def pid(self):
        return self.process.pid

    def log(self):
        return Path(self.log_path).read_text(errors="replace")

    def wait_ready(self, marker, timeout=60):
        def ready():
            if self.process.poll() is not None:
                raise ProcessFailed(f"celery {self.kind} exited early:\n{self.log()}")
            return marker in self.log()

        try:
            poll_until(ready, timeout=timeout, message=f"celery {self.kind} to start")
        except TimeoutError as exc:
            self.stop()
            raise ProcessFailed(f"{exc}:\n{self.log()}") from None
        except ProcessFailed:
            self.stop()
            raise
        return self

    def kill(self):
        """SIGKILL: no clean shutdown, no ack, exactly what a crash or OOM kill does."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self):
        terminate(self.process)
        self._log.close()


# A worker of one process, one task at a time, that talks to no other worker.
SOLO_WORKER_ARGS = (
    "--pool=solo",
    "--loglevel=INFO",
    "--without-gossip",
    "--without-mingle",
    "--without-heartbeat",
)
# How a test runs ``celery``: the test project's app, in this interpreter.
CELERY_COMMAND = (sys.executable, "-m", "celery", "-A", "tests.celery_app")


def start_worker(env, log_dir, *, name=None, extra_args=(), root=ROOT):
    """One solo-pool worker (one process, one task at a time), started and ready; ``root``
    names the checkout whose code it runs (another release's, in the upgrade test)."""
    name = name or f"w-{uuid.uuid4().hex[:6]}"
    worker = CeleryProcess(
        "worker",
        [*SOLO_WORKER_ARGS, f"--hostname={name}@%h", *extra_args],
        env,
        Path(log_dir) / f"{name}.log",
        root=root,
    )
    return worker.wait_ready(WORKER_READY)


def start_beat(env, log_dir, *, name="beat", root=ROOT):
    """A beat process with django-celery-beat's DatabaseScheduler, started and ready; a second
    one beside it needs a ``name`` of its own (its log and pid file)."""
    log_dir = Path(log_dir)
    beat = CeleryProcess(
        "beat",
        [
            "--loglevel=INFO",
            "--scheduler=django_celery_beat.schedulers:DatabaseScheduler",
            "--max-interval=1",
            f"--pidfile={log_dir / f'{name}.pid'}",
        ],
        env,
        log_dir / f"{name}.log",
        root=root,
    )
    return beat.wait_ready(BEAT_READY)
