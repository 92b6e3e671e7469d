"""Every benchmark runs to completion on tiny sizes, so that none can rot between releases.

The figures of such a run mean nothing; what is checked is that each benchmark starts, does its
work against the real services and prints its table. They need PostgreSQL and Redis, and run
in the CI's PostgreSQL pass.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.db import connection

ROOT = Path(__file__).resolve().parent.parent

# Each benchmark with the options that make it take seconds, and a line its report must print.
TINY_RUNS = {
    "tags": (["--loops", "20"], "tiktok_purchase"),
    "checkout": (["--orders", "50"], "median"),
    "checkout_postgres": (
        ["--orders", "50", "--database-url", "{postgres}/tiktok_bench_checkout_ci"],
        "median",
    ),
    "delivery": (
        [
            "--events", "1000", "--single-events", "20", "--memory-events", "1000",
            "--workers", "1", "--profile-events", "200",
            "--database-url", "{postgres}/tiktok_bench_delivery_ci",
        ],
        "events/s",
    ),
    "latency": (
        ["--rate", "20", "--seconds", "3", "--database-url", "{postgres}/tiktok_bench_latency_ci"],
        "p99",
    ),
    "admin_scale": (
        ["--rows", "3000", "--database-url", "{postgres}/tiktok_bench_admin_ci"],
        "ms",
    ),
    "soak": (
        [
            "--rate", "20", "--seconds", "4", "--block-seconds", "2",
            "--database-url", "{postgres}/tiktok_bench_soak_ci",
        ],
        "p99",
    ),
}  # fmt: skip


def postgres_server_url():
    """The server of the PostgreSQL test database, or None on another database."""
    if connection.vendor != "postgresql":
        return None
    settings = connection.settings_dict
    user = settings.get("USER") or "postgres"
    return f"postgres://{user}@{settings.get('HOST') or '127.0.0.1'}:{settings.get('PORT') or 5432}"


@pytest.mark.parametrize("name", sorted(TINY_RUNS))
def test_benchmark_runs_to_completion_on_tiny_sizes(name, tmp_path):
    postgres = postgres_server_url()
    if postgres is None:
        pytest.skip("the benchmarks need PostgreSQL and Redis: they run in the PostgreSQL pass")
    options, expected = TINY_RUNS[name]
    module = f"bench.{name.removesuffix('_postgres')}"
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DJANGO_", "TIKTOK_TEST_"))
    }
    completed = subprocess.run(
        [sys.executable, "-m", module, *(option.format(postgres=postgres) for option in options)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, f"{module} exited {completed.returncode}:\n{output[-4000:]}"
    assert expected in output, f"{module} printed no {expected!r}:\n{output[-4000:]}"
