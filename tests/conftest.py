"""Shared fixtures: the sandbox over real HTTP, real Celery worker and beat processes, services."""

import os
import signal
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

from tiktok_tracking.sandbox import SandboxServer

ROOT = Path(__file__).resolve().parent.parent


def wait_until(predicate, timeout=20.0, interval=0.05, message="condition"):
    """Poll ``predicate`` until it returns something truthy; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"Timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


@pytest.fixture(scope="session")
def sandbox_server():
    server = SandboxServer(token=settings.TIKTOK_TRACKING["ACCESS_TOKEN"]).start()
    # The test process and the workers it starts both send to this sandbox.
    settings.TIKTOK_TRACKING["API_URL"] = server.events_url
    yield server
    server.stop()


@pytest.fixture
def sandbox(sandbox_server):
    sandbox_server.reset()
    yield sandbox_server
    sandbox_server.reset()


class CeleryProcess:
    """A real ``celery worker`` or ``celery beat`` process running the test settings."""

    def __init__(self, kind, args, env, log_path):
        self.kind = kind
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "tests.celery_app", kind, *args],
            cwd=ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def log(self):
        return Path(self.log_path).read_text(errors="replace")

    def wait_ready(self, marker, timeout=60):
        def ready():
            if self.process.poll() is not None:
                pytest.fail(f"celery {self.kind} exited early:\n{self.log()}")
            return marker in self.log()

        wait_until(ready, timeout=timeout, message=f"celery {self.kind} to start")

    def kill(self):
        """SIGKILL: no clean shutdown, no ack, exactly what a crash or OOM kill does."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log.close()


@pytest.fixture
def celery_env(sandbox, transactional_db):
    """Environment for processes that must see this test's database, broker and sandbox."""
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="tests.settings",
        TIKTOK_TEST_RUN_DIR=str(settings.RUN_DIR),
        TIKTOK_TEST_DB_NAME=str(connection.settings_dict["NAME"]),
        TIKTOK_API_URL=sandbox.events_url,
        PYTHONUNBUFFERED="1",
    )
    return env


@pytest.fixture
def start_worker(celery_env, tmp_path):
    """Start real Celery worker processes; each is stopped at the end of the test."""
    from tests.celery_app import app

    # Tasks left over from an earlier test would only find rows that no longer exist, but
    # purging keeps each test's log about itself.
    app.control.purge()
    started = []

    def start():
        name = f"w{len(started)}-{uuid.uuid4().hex[:6]}"
        worker = CeleryProcess(
            "worker",
            [
                "--pool=solo",
                "--loglevel=INFO",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
                f"--hostname={name}@%h",
            ],
            celery_env,
            tmp_path / f"{name}.log",
        )
        started.append(worker)
        worker.wait_ready(" ready.")
        return worker

    yield start
    for worker in started:
        worker.stop()


@pytest.fixture
def start_beat(celery_env, tmp_path):
    """Start a real beat process with django-celery-beat's DatabaseScheduler."""
    started = []

    def start():
        beat = CeleryProcess(
            "beat",
            [
                "--loglevel=INFO",
                "--scheduler=django_celery_beat.schedulers:DatabaseScheduler",
                "--max-interval=1",
                f"--pidfile={tmp_path / 'beat.pid'}",
            ],
            celery_env,
            tmp_path / "beat.log",
        )
        started.append(beat)
        beat.wait_ready("beat: Starting...")
        return beat

    yield start
    for beat in started:
        beat.stop()


# Nothing listens on port 1: publishing fails with "connection refused" at once.
UNREACHABLE_BROKER = "amqp://guest:guest@127.0.0.1:1//"


@pytest.fixture
def broken_broker():
    """Make this process's Celery app publish to a broker that is down, for a block of code."""
    from tests.celery_app import app

    def reset_pools():
        # Celery caches its connection and producer pools; drop them so the URL change counts.
        app._pool = None
        app.amqp._producer_pool = None

    @contextmanager
    def broken():
        saved = app.conf.get("broker_write_url")
        app.conf.broker_write_url = UNREACHABLE_BROKER
        reset_pools()
        try:
            yield
        finally:
            app.conf.broker_write_url = saved
            reset_pools()

    return broken
