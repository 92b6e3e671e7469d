"""Shared fixtures: the sandbox over real HTTP, real Celery worker and beat processes, services."""

import os
import subprocess
import uuid
from contextlib import contextmanager
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from tests import processes
from tiktok_tracking.publisher import publisher
from tiktok_tracking.sandbox import SandboxServer

ROOT = Path(__file__).resolve().parent.parent
# Set by CI's service passes: there, a test that would skip for a missing service fails instead.
REQUIRE_SERVICES_ENV = "TIKTOK_REQUIRE_SERVICES"


def skip_unless_required(reason):
    """Skip with ``reason``; fail instead where CI requires the services (it has them)."""
    if os.environ.get(REQUIRE_SERVICES_ENV) == "1":
        pytest.fail(f"{reason}, and {REQUIRE_SERVICES_ENV}=1", pytrace=False)
    pytest.skip(reason)


def wait_until(predicate, timeout=20.0, interval=0.05, message="condition"):
    """Poll ``predicate`` until it returns something truthy; fail the test after ``timeout``."""
    try:
        return processes.poll_until(predicate, timeout=timeout, interval=interval, message=message)
    except TimeoutError as exc:
        pytest.fail(str(exc))


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
        worker = processes.start_worker(
            celery_env, tmp_path, name=f"w{len(started)}-{uuid.uuid4().hex[:6]}"
        )
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


@pytest.fixture
def start_beat(celery_env, tmp_path):
    """Start a real beat process with django-celery-beat's DatabaseScheduler."""
    started = []

    def start():
        beat = processes.start_beat(celery_env, tmp_path)
        started.append(beat)
        return beat

    yield start
    for beat in started:
        beat.stop()


# Nothing listens on port 1: publishing fails with "connection refused" at once.
UNREACHABLE_BROKER = "amqp://guest:guest@127.0.0.1:1//"


@contextmanager
def publishing_to(broker_url, flush_timeout=30):
    """Make this process's Celery app publish to ``broker_url`` for a block of code."""
    from tests.celery_app import app

    def reset_pools():
        # Celery caches its connection and producer pools; drop them so the URL change counts.
        app._pool = None
        app.amqp._producer_pool = None

    saved = app.conf.get("broker_write_url")
    app.conf.broker_write_url = broker_url
    reset_pools()
    try:
        yield
        # Publishes happen on a background thread: let them meet the broker first.
        assert publisher.flush(timeout=flush_timeout), "the background publisher did not finish"
    finally:
        app.conf.broker_write_url = saved
        reset_pools()


@pytest.fixture
def broken_broker():
    """Make this process's Celery app publish to a broker that is down, for a block of code."""
    return lambda: publishing_to(UNREACHABLE_BROKER)


@pytest.fixture(scope="session", autouse=True)
def pooled_connections_released(request):
    """Behind PgBouncer (the pooler pass), its server connections to the test database outlive
    the tests' own: drop them before the test database is, or DROP DATABASE fails."""
    if os.environ.get("TIKTOK_TEST_TRANSACTION_POOLER") != "1":
        yield
        return
    request.getfixturevalue("django_db_setup")  # torn down after this fixture
    yield
    from django.db import connections

    database = connections["default"].settings_dict
    for each in connections.all():
        each.close()
    console = ["psql", "-h", database["HOST"], "-p", str(database["PORT"])]
    console += ["-U", database["USER"], "-d", "pgbouncer"]
    for command in (f"KILL {database['NAME']}", f"RESUME {database['NAME']}"):
        subprocess.run(
            [*console, "-c", command],
            capture_output=True,
            check=False,
            timeout=30,
        )


def migrate(targets):
    """Move the test database to the migrations ``targets``; the apps as they stand there."""
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)
    return executor.loader.project_state(targets).apps


@pytest.fixture
def latest_schema_after():
    """Bring the test database back to the latest migrations after a test that moved it: the
    tests after it need every table."""
    yield
    migrate(MigrationExecutor(connection).loader.graph.leaf_nodes())
