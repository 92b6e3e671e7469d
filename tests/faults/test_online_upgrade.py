"""An upgrade without a stall: the previous release keeps taking payments while ``migrate`` runs.

The documented order (docs/deployment.md, "Upgrading"): migrate while the previous release
still runs, then restart its web processes and workers on the new one. The test plays it on
PostgreSQL with the previous release's own code (a git worktree of the commit named in
``.ci/previous-release``), an outbox of 1,000,000 rows and an attempt log of 100,000: its
worker and beat deliver and its payer pays some 20 orders a second throughout (every fourth
partly refunded); the new release migrates the database under them; then the workers are
restarted on the new code. No payment or refund may fail or wait, no statement of the old
worker may be refused, and TikTok counts every paid order exactly once.
"""

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg
import pytest
from django.db import connection

from tests import processes
from tests.conftest import skip_unless_required, wait_until
from tests.faults.conftest import SCENARIOS, needs_services
from tests.faults.harness import judge, sandbox_ids

pytestmark = needs_services

ROOT = processes.ROOT
PREVIOUS_RELEASE = ROOT / ".ci" / "previous-release"
SIDE = Path(__file__).with_name("previous_release.py")
ROWS = int(os.environ.get("TIKTOK_UPGRADE_ROWS", "1000000"))
# Attempts logged of them: this release's migrations leave the log alone.
ATTEMPTS = ROWS // 10
# The last commit before migration 0004, and the attempts its log holds there: enough to
# show a long data move (it takes some 30 s a million), few enough to keep CI short.
BEFORE_0004 = "c78e5f2eb5601a1dfc1ddbcf77b2a2318477235f"
BEFORE_0004_ROWS = int(os.environ.get("TIKTOK_UPGRADE_ROWS_BEFORE_0004", "100000"))
# Payments of the previous release around the migration, before and after it.
PAYING_AROUND = 3.0
# The longest a payment may take while the database migrates: a lock held for the length of
# a table rewrite or a long data move would show here (24 s were seen for migration 0004).
SLOWEST_PAYMENT = 2.0
# The longest from a payment to its delivery: the old worker delivers throughout, and the
# restart on the new release takes a few seconds.
SLOWEST_DELIVERY = 15.0
# What a worker's log must never show: the new schema refused by the old code.
REFUSALS = ("ProgrammingError", "UndefinedColumn", "UndefinedTable", "NotNullViolation")


def previous_release_commit():
    # TIKTOK_PREVIOUS_RELEASE tries an upgrade from another commit, e.g. one before a migration.
    if os.environ.get("TIKTOK_PREVIOUS_RELEASE"):
        return os.environ["TIKTOK_PREVIOUS_RELEASE"]
    lines = [line.split("#")[0].strip() for line in PREVIOUS_RELEASE.read_text().splitlines()]
    [commit] = [line for line in lines if line]
    return commit


def git(*args, **kwargs):
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, **kwargs)


@pytest.fixture
def checkout_of(tmp_path):
    """``checkout_of(commit)``: a worktree of ``commit``, removed after the test."""
    made = []

    def make(commit):
        if git("cat-file", "-e", f"{commit}^{{commit}}").returncode != 0:
            # A shallow clone: the commit is fetched from where the clone came from.
            git("fetch", "--quiet", "origin", commit)
        if git("cat-file", "-e", f"{commit}^{{commit}}").returncode != 0:
            skip_unless_required(f"the commit {commit} is not in this clone")
        path = tmp_path / f"release-{commit[:12]}"
        git("worktree", "add", "--detach", str(path), commit, check=True)
        made.append(path)
        return path

    yield make
    for path in made:
        git("worktree", "remove", "--force", str(path))


@pytest.fixture
def upgrade_database():
    """A database of its own (the test database stays at the new release's schema)."""
    settings = connection.settings_dict
    name = f"{settings['NAME']}_upgrade_{uuid.uuid4().hex[:6]}"
    server = {
        "host": settings["HOST"] or None,
        "port": settings["PORT"] or None,
        "user": settings["USER"] or None,
        "password": settings["PASSWORD"] or None,
        "dbname": "postgres",
        "autocommit": True,
    }
    with psycopg.connect(**server) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    yield name, {**server, "dbname": name}
    with psycopg.connect(**server) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def environment(root, database, sandbox, run_dir):
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="tests.settings",
        TIKTOK_TEST_DB_NAME=database,
        TIKTOK_TEST_RUN_DIR=str(run_dir),
        TIKTOK_API_URL=sandbox.events_url,
        PYTHONUNBUFFERED="1",
        # The checkout's own code first: the installed package is the new release's.
        PYTHONPATH=str(root),
    )
    run_dir.mkdir(parents=True, exist_ok=True)
    return env


def run(args, root, env, **kwargs):
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, *args], cwd=root, env=env, capture_output=True, text=True, **kwargs
    )
    assert done.returncode == 0, f"{args} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout, time.monotonic() - started


def pending_migrations(root, env):
    out, _ = run(["manage.py", "migrate", "--plan", "tiktok_tracking"], root, env)
    return [
        line.strip() for line in out.splitlines() if line.strip().startswith("tiktok_tracking.")
    ]


def slowest_delivery(server, prefix):
    """The longest an order paid around the upgrade waited between its row and its delivery."""
    with psycopg.connect(**server) as db:
        [seconds] = db.execute(
            "SELECT coalesce(max(extract(epoch FROM delivered_at - created_at)), 0) "
            "FROM tiktok_tracking_trackedevent WHERE order_id LIKE %s",
            [f"{prefix}%"],
        ).fetchone()
    return round(float(seconds), 2)


def outbox_statuses(server, prefix):
    with psycopg.connect(**server) as db:
        rows = db.execute(
            "SELECT status, count(*) FROM tiktok_tracking_trackedevent "
            "WHERE order_id LIKE %s GROUP BY status",
            [f"{prefix}%"],
        ).fetchall()
    return dict(rows)


def test_previous_release_worker_during_migrate_loses_and_blocks_nothing(
    checkout_of, upgrade_database, sandbox, tmp_path
):
    upgrade(
        "previous release during migrate",
        checkout_of(previous_release_commit()),
        (ROWS, ATTEMPTS),
        upgrade_database,
        sandbox,
        tmp_path,
    )


def test_migration_0004_is_safe_online_under_the_workers_of_the_release_before_it(
    checkout_of, upgrade_database, sandbox, tmp_path
):
    # Migration 0004 moved the attempt log into two tables in one 25 s transaction (a million
    # attempts) and dropped the columns the release before it still wrote: its workers
    # waited, then failed every attempt INSERT with UndefinedColumn until restarted.
    upgrade(
        "release before 0004 during migrate",
        checkout_of(BEFORE_0004),
        (BEFORE_0004_ROWS, BEFORE_0004_ROWS),
        upgrade_database,
        sandbox,
        tmp_path,
    )


def upgrade(name, previous_checkout, sizes, upgrade_database, sandbox, tmp_path):
    """Play the upgrade from ``previous_checkout``'s release with ``sizes`` (outbox rows,
    logged attempts), and judge it."""
    rows, attempts = sizes
    from tests.celery_app import app

    test_started = time.monotonic()
    database, server = upgrade_database
    old_env = environment(previous_checkout, database, sandbox, tmp_path / "run-old")
    new_env = environment(ROOT, database, sandbox, tmp_path / "run-new")
    found, _ = run(
        ["-c", "import tiktok_tracking; print(tiktok_tracking.__file__)"],
        previous_checkout,
        old_env,
    )
    assert found.startswith(str(previous_checkout)), found

    _, old_migrate_seconds = run(["manage.py", "migrate", "--no-input"], previous_checkout, old_env)
    app.control.purge()
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    old_fleet = [
        processes.start_worker(old_env, log_dir, name="old-worker", root=previous_checkout),
        processes.start_beat(old_env, log_dir, name="old-beat", root=previous_checkout),
    ]
    _, fill_seconds = run([str(SIDE), "fill", str(rows), str(attempts)], previous_checkout, old_env)
    migrations = pending_migrations(ROOT, new_env)
    prefix = f"U{uuid.uuid4().hex[:5]}"
    payments, stop = tmp_path / "payments.jsonl", tmp_path / "stop"
    payer = subprocess.Popen(
        [sys.executable, str(SIDE), "pay", prefix, str(payments), str(stop)],
        cwd=previous_checkout,
        env=old_env,
    )
    new_fleet = []
    try:
        time.sleep(PAYING_AROUND)
        migrate_started = time.time()
        _, migrate_seconds = run(["manage.py", "migrate", "--no-input"], ROOT, new_env)
        migrate_ended = time.time()
        time.sleep(PAYING_AROUND)
        stop.touch()
        assert payer.wait(timeout=30) == 0
        # The old release's worker went on delivering through the migration; its log says
        # whether the new schema refused any of its statements.
        time.sleep(2.0)
        old_logs = {process.log_path: process.log() for process in old_fleet}
        for process in old_fleet:
            process.stop()
        # The documented second step: the workers restart on the new release.
        new_fleet = [
            processes.start_worker(new_env, log_dir, name="new-worker"),
            processes.start_beat(new_env, log_dir, name="new-beat"),
        ]
        lines = [json.loads(line) for line in payments.read_text().splitlines()]
        paid = {line["number"] for line in lines if line["error"] is None}
        wait_until(
            lambda: outbox_statuses(server, prefix).get("delivered", 0) >= len(paid),
            timeout=60,
            message="every order paid around the upgrade delivered",
        )
    finally:
        stop.touch()
        if payer.poll() is None:
            payer.kill()
        for process in (*old_fleet, *new_fleet):
            if process.process.poll() is None:
                process.stop()

    during = [line for line in lines if migrate_started <= line["at"] <= migrate_ended + 1]
    failed = [line for line in lines if line["error"]]
    refusals = {
        path.name: [word for word in REFUSALS if word in text] for path, text in old_logs.items()
    }
    accepted, sent = sandbox_ids(sandbox, prefix)
    verdict = judge(accepted, sent, expected={f"order_{n}" for n in paid}, forbidden=set())
    figures = {
        "scenario": name,
        "withheld": 0,
        "rolled_back": 0,
        "leaked": len(verdict.leaked),
        "requests": len(sandbox.requests),
        "checkout_max_ms": round(max((line["seconds"] for line in lines), default=0) * 1000, 1),
        "seconds": round(time.monotonic() - test_started, 1),
        "rows": rows,
        "attempts": attempts,
        "migrations": migrations,
        "fill_seconds": round(fill_seconds, 1),
        "old_migrate_seconds": round(old_migrate_seconds, 1),
        "migrate_seconds": round(migrate_seconds, 1),
        "payments": len(lines),
        "payments_during_migrate": len(during),
        "slowest_payment_s": max((line["seconds"] for line in lines), default=0),
        "failed_payments": len(failed),
        "slowest_delivery_s": slowest_delivery(server, prefix),
        "committed": len(paid),
        "expected": verdict.expected,
        "counted": verdict.counted,
        "missing": len(verdict.missing),
        "unexpected": len(verdict.unexpected),
        "resent": verdict.resent,
        "statuses": outbox_statuses(server, prefix),
    }
    SCENARIOS.append(figures)
    print(json.dumps(figures, indent=2))
    assert not failed, failed[:5]
    assert not any(refusals.values()), refusals
    assert figures["slowest_payment_s"] <= SLOWEST_PAYMENT, figures
    assert figures["slowest_delivery_s"] <= SLOWEST_DELIVERY, figures
    assert (verdict.missing, verdict.unexpected, verdict.resent) == ([], [], 0), figures
