"""Every benchmark runs to completion on tiny sizes, so that none can rot between releases.

The figures of such a run mean nothing; what is checked is that each benchmark starts, does its
work against the real services and prints its tables. They need PostgreSQL and Redis, and run
in the CI's PostgreSQL pass.

Each benchmark gets databases named after this session's test database, so that two sessions
on one server (two checkouts, pytest-xdist) do not drop each other's; and, when the session's
``CELERY_BROKER_URL`` is a Redis database other than 0, that database as its broker (the
benchmarks flush it), else its own default.
"""

import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from django.db import connection

ROOT = Path(__file__).resolve().parent.parent

# Each run: the benchmark's module, the options that make it take seconds, and lines its
# report must print. "{postgres}/{db}_<suffix>" names a database of this session's;
# "{redis}" the broker option, if the session has a Redis database to lend.
TINY_RUNS = {
    "tags": ("tags", ["--samples", "50", "--rounds", "2"], ["tiktok_purchase", "middleware"]),
    "checkout": (
        "checkout",
        ["--orders", "20", "--naive-orders", "3", "--rounds", "1"],
        ["capture_context", "median"],
    ),
    "checkout_postgres": (
        "checkout",
        [
            "--orders", "20", "--naive-orders", "3", "--rounds", "1",
            "--database-url", "{postgres}/{db}_checkout",
        ],
        ["capture_context", "median"],
    ),
    "checkout_profile": (
        "checkout",
        ["--profile", "--orders", "10", "--rounds", "1"],
        ["SQL statements", "in Python", "by cumulative time"],
    ),
    "checkout_profile_postgres": (
        "checkout",
        [
            "--profile", "--orders", "10", "--rounds", "1",
            "--database-url", "{postgres}/{db}_checkout_profile",
        ],
        ["SQL statements", "in Python", "by cumulative time"],
    ),
    "delivery": (
        "delivery",
        [
            "--events", "1000", "--single-events", "20", "--memory-events", "1000",
            "--workers", "1", "--profile-events", "200",
            "--database-url", "{postgres}/{db}_delivery", "{redis:--redis-url}",
        ],
        ["events/s"],
    ),
    "distance": (
        "distance",
        [
            "--events", "1000", "--distances", "5", "--far-workers", "2", "--payments", "4",
            "--database-url", "{postgres}/{db}_distance", "{redis:--redis-url}",
        ],
        ["events/s", "what the app adds", "share of its loopback rate"],
    ),
    "latency": (
        "latency",
        [
            "--rate", "20", "--seconds", "3", "--database-url", "{postgres}/{db}_latency",
            "{redis:--broker-url}",
        ],
        ["p99"],
    ),
    "admin_scale": (
        "admin_scale",
        ["--rows", "3000", "--database-url", "{postgres}/{db}_admin"],
        ["ms"],
    ),
    "soak": (
        "soak",
        [
            "--rate", "20", "--seconds", "4", "--block-seconds", "2",
            "--database-url", "{postgres}/{db}_soak", "{redis:--broker-url}",
        ],
        ["p99"],
    ),
}  # fmt: skip


def postgres_server_url():
    """The server of the PostgreSQL test database, or None on another database."""
    if connection.vendor != "postgresql":
        return None
    settings = connection.settings_dict
    user = settings.get("USER") or "postgres"
    return f"postgres://{user}@{settings.get('HOST') or '127.0.0.1'}:{settings.get('PORT') or 5432}"


def database_prefix():
    """This session's benchmark databases' prefix: the test database's name, and 'bench' (the
    benchmarks refuse a database not named for them); short enough for PostgreSQL's 63."""
    return f"{connection.settings_dict['NAME'][:40]}_bench"


def lent_broker():
    """The session's Redis broker database for the benchmarks, unless it is database 0."""
    url = os.environ.get("CELERY_BROKER_URL", "")
    parts = urlsplit(url)
    if parts.scheme != "redis" or parts.path.strip("/") in ("", "0"):
        return None
    return url


def command_line(module, options, postgres):
    """The benchmark's command line, and the PostgreSQL database it is given, if any."""
    broker = lent_broker()
    line = [sys.executable, "-m", f"bench.{module}"]
    database = None
    for option in options:
        if option.startswith("{redis:"):
            if broker:
                line += [option.removeprefix("{redis:").removesuffix("}"), broker]
            continue
        line.append(option.format(postgres=postgres, db=database_prefix()))
        if "{postgres}" in option:
            database = urlsplit(line[-1]).path.lstrip("/")
    return line, database


def drop_database(name):
    """Drop a database a benchmark left (admin_scale keeps its own for the next run)."""
    import psycopg
    from psycopg import sql

    settings = connection.settings_dict
    with psycopg.connect(
        host=settings.get("HOST") or "127.0.0.1",
        port=settings.get("PORT") or 5432,
        user=settings.get("USER") or "postgres",
        password=settings.get("PASSWORD") or None,
        dbname="postgres",
        autocommit=True,
    ) as server:
        server.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))


@pytest.mark.parametrize("name", sorted(TINY_RUNS))
def test_benchmark_runs_to_completion_on_tiny_sizes(name, tmp_path):
    postgres = postgres_server_url()
    if postgres is None:
        pytest.skip("the benchmarks need PostgreSQL and Redis: they run in the PostgreSQL pass")
    module, options, expected = TINY_RUNS[name]
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DJANGO_", "TIKTOK_TEST_"))
    }
    line, database = command_line(module, options, postgres)
    try:
        completed = subprocess.run(
            line, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
        )
    finally:
        if database:
            drop_database(database)
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, f"{name} exited {completed.returncode}:\n{output[-4000:]}"
    for line in expected:
        assert line in output, f"{name} printed no {line!r}:\n{output[-4000:]}"


def test_the_distance_table_goes_between_its_markers(tmp_path):
    from bench.distance import BEGIN_MARK, END_MARK, write_into

    page = tmp_path / "BENCHMARKS.md"
    page.write_text(f"# Benchmarks\n\nbefore\n{BEGIN_MARK}\nold table\n{END_MARK}\nafter\n")
    write_into(page, "| new | table |", "A header.")
    assert page.read_text() == (
        f"# Benchmarks\n\nbefore\n{BEGIN_MARK}\nA header.\n\n| new | table |\n{END_MARK}\nafter\n"
    )
    page.write_text("no markers\n")
    with pytest.raises(SystemExit, match="has no"):
        write_into(page, "| t |", "h")


def drain_of(label, workers, per_second):
    from bench.delivery import Drain

    drain = Drain(label, events=int(per_second * 10), workers=workers, batch_size=1000)
    drain.seconds = 10.0
    return drain


def test_the_scale_out_target_is_weighed_against_the_same_workers_at_loopback():
    from bench.distance import ceiling_note, table, targets

    rows = [
        (0.0, drain_of("loopback, 1 worker", 1, 10_000)),
        (0.0, drain_of("loopback, 4 workers", 4, 9_900)),
        (20.0, drain_of("20 ms, 1 worker", 1, 4_150)),
        (20.0, drain_of("20 ms, 4 workers", 4, 8_050)),
    ]
    [(what, figure, target, ok)] = targets(rows)
    assert (what, figure, target, ok) == (
        "4 workers at 20 ms, against 1 worker there",
        "1.94x",
        ">= 3x",
        False,
    )
    note = ceiling_note(rows)
    assert note.startswith("This machine's ceiling: 4 workers at loopback reach 9,900 events/s.")
    assert "3 times one worker at 20 ms would be 12,450 events/s, 126% of that ceiling: " in note
    assert "no hiding of latency can get there" in note
    assert note.endswith(
        "4 workers at 20 ms reach 81% of it: the share of the ceiling the distance leaves them."
    )
    assert note in table(rows, [], (0, 0))
    rows[1][1].machine_busy = 0.97
    assert ceiling_note(rows).startswith(
        "This machine's ceiling: 4 workers at loopback reach 9,900 events/s, with 97% of all "
        "cores busy."
    )
    # A machine whose cores allow more: the same sentence, without the "more than" clause.
    rows[1] = (0.0, drain_of("loopback, 4 workers", 4, 20_000))
    assert "62% of that ceiling. 4 workers at 20 ms reach 40% of it" in ceiling_note(rows)
    assert "no hiding" not in ceiling_note(rows)
    # Without the loopback drain of as many workers, nothing is claimed about the ceiling.
    assert ceiling_note([rows[0], rows[2], rows[3]]) is None


def test_the_busy_share_of_all_cores_between_two_readings():
    from bench.common import busy_share, machine_cpu_times

    assert busy_share((10, 100), (60, 200)) == 0.5
    # No /proc, or no time between the readings: no figure rather than a wrong one.
    assert busy_share(None, (60, 200)) is None
    assert busy_share((10, 100), (10, 100)) is None
    now = machine_cpu_times()
    if now is not None:
        busy, total = now
        assert 0 <= busy <= total
