"""Fixtures of the fault matrix: worker fleets, proxies, and a verdict per scenario."""

import json
import os
import time
import uuid
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connections
from django.db.models import Count

from tests import processes
from tests.conftest import skip_unless_required, wait_until
from tests.faults.harness import OrderBook, Status, judge, sandbox_ids
from tests.faults.proxy import ToggleProxy
from tiktok_tracking.models import DeliveryAttempt
from tiktok_tracking.publisher import publisher

# After the last row is finished, keep listening this long (several sweeps of 1 s) for a late
# duplicate or a row handed back by the sweeper.
QUIET_SECONDS = 2.5
# Paid orders per scenario.
ORDERS = int(os.environ.get("TIKTOK_FAULT_ORDERS", "1000"))
SCENARIOS = []


def services_missing():
    """Why the matrix cannot run here, or None: it needs PostgreSQL and Redis."""
    engine = settings.DATABASES["default"]["ENGINE"]
    broker = settings.CELERY_BROKER_URL
    if "postgresql" not in engine or not broker.startswith(("redis://", "amqp://")):
        return (
            "the fault matrix runs on PostgreSQL + Redis or RabbitMQ (DATABASE_URL=postgres://"
            "... CELERY_BROKER_URL=redis://... or amqp://...; .ci/run's second pass sets both)"
        )
    return None


# The scenarios' marks (the fixture below skips them where the services are not configured).
needs_services = [pytest.mark.integration, pytest.mark.faults]


@pytest.fixture(autouse=True)
def _services_or_skip(request):
    reason = services_missing() if request.node.get_closest_marker("faults") else None
    if reason is not None:
        skip_unless_required(reason)


class Cluster:
    """The worker and beat processes of one scenario, each with its own environment."""

    def __init__(self, env, log_dir):
        self.env = env
        self.log_dir = log_dir
        self.processes = []

    def worker(self, *, prefork=False, extra_args=(), **env):
        extra = (*(("--pool=prefork", "--concurrency=1") if prefork else ()), *extra_args)
        worker = processes.start_worker(
            {**self.env, **env},
            self.log_dir,
            name=f"w{len(self.processes)}-{uuid.uuid4().hex[:6]}",
            extra_args=extra,
        )
        self.processes.append(worker)
        return worker

    def beat(self, **env):
        beat = processes.start_beat(
            {**self.env, **env}, self.log_dir, name=f"beat{len(self.processes)}"
        )
        self.processes.append(beat)
        return beat

    def stop(self):
        for process in reversed(self.processes):
            process.stop()
        self.processes.clear()


@pytest.fixture
def cluster(celery_env, tmp_path):
    from tests.celery_app import app

    # Left-over wake-ups of an earlier test would only find rows that no longer exist.
    app.control.purge()
    fleet = Cluster(celery_env, tmp_path)
    yield fleet
    fleet.stop()
    publisher.flush(timeout=30)


@pytest.fixture
def book():
    """The scenario's orders, numbered with a prefix of their own."""
    return OrderBook(prefix=f"F{uuid.uuid4().hex[:6]}")


@pytest.fixture
def proxy():
    """``proxy(host, port)``: a ToggleProxy in front of a service, closed after the test."""
    made = []

    def make(host, port):
        made.append(ToggleProxy(host, port))
        return made[-1]

    yield make
    for each in made:
        each.close()


def settle(book, timeout=120):
    """Wait until no row of ``book`` is pending or sending, and it stays so for a while."""
    deadline = time.monotonic() + timeout
    while True:
        wait_until(
            lambda: book.unfinished() == 0,
            timeout=max(deadline - time.monotonic(), 1),
            interval=0.2,
            message=f"every row to finish; now {book.statuses()}",
        )
        time.sleep(QUIET_SECONDS)
        if book.unfinished() == 0:
            return


def finish(name, book, sandbox, *, allow_resends=False, timeout=120, **notes):
    """Settle, judge from the sandbox's records, check the outbox agrees, record the figures."""
    settle(book, timeout=timeout)
    connections.close_all()  # a scenario may have restarted the database under us
    accepted, sent = sandbox_ids(sandbox, book.prefix)
    verdict = judge(accepted, sent, expected=book.expected, forbidden=book.forbidden)
    statuses = book.statuses()
    outcomes = dict(
        DeliveryAttempt.objects.filter(tracked_event__order_id__startswith=book.prefix)
        .values_list("answer__outcome")
        .annotate(n=Count("pk"))
    )
    figures = {
        "scenario": name,
        "committed": book.committed,
        "withheld": len(book.withheld),
        "rolled_back": len(book.rolled_back),
        "rejected": len(book.rejected),
        "expected": verdict.expected,
        "counted": verdict.counted,
        "missing": len(verdict.missing),
        "unexpected": len(verdict.unexpected),
        "leaked": len(verdict.leaked),
        "resent": verdict.resent,
        "requests": len(sandbox.requests),
        "attempts": outcomes,
        "statuses": statuses,
        "checkout_max_ms": round(max(book.checkout_seconds, default=0) * 1000, 1),
        "seconds": round(time.monotonic() - book.started, 1),
        **notes,
    }
    SCENARIOS.append(figures)
    problems = verdict.problems(allow_resends=allow_resends)
    delivered = set(book.rows().filter(status=Status.DELIVERED).values_list("event_id", flat=True))
    if delivered != book.expected:
        problems.append(
            f"outbox disagrees: {len(book.expected - delivered)} expected not delivered, "
            f"{len(delivered - book.expected)} delivered unexpectedly"
        )
    if book.rows().filter(order_id__in=book.rolled_back_numbers).exists():
        problems.append("a rolled-back order left an outbox row")
    withheld = book.rows().filter(event_id__in=book.withheld)
    if withheld.exclude(status=Status.SUPPRESSED).exists():
        problems.append("an order kept back by consent is not suppressed in the outbox")
    refused = book.rows().filter(event_id__in=book.rejected)
    if refused.exclude(status=Status.FAILED, last_code=40002).exists():
        problems.append("an event TikTok refused is not failed with code 40002")
    assert not problems, f"{name}: {problems}\nfigures: {figures}"
    return figures


def pytest_terminal_summary(terminalreporter):
    if not SCENARIOS:
        return
    write = terminalreporter.write_line
    terminalreporter.section("fault matrix (each scenario judged from the sandbox's records)")
    columns = (
        ("scenario", 34, "scenario"),
        ("committed", 9, "committed"),
        ("withheld", 8, "withheld"),
        ("rolled back", 11, "rolled_back"),
        ("expected", 8, "expected"),
        ("counted", 7, "counted"),
        ("missing", 7, "missing"),
        ("leaked", 6, "leaked"),
        ("resent", 6, "resent"),
        ("requests", 8, "requests"),
        ("checkout max ms", 15, "checkout_max_ms"),
        ("seconds", 7, "seconds"),
    )
    write(
        " ".join(
            f"{title:<{width}}" if key == "scenario" else f"{title:>{width}}"
            for title, width, key in columns
        )
    )
    for s in SCENARIOS:
        write(
            " ".join(
                f"{s[key]:<{width}.{width}}" if key == "scenario" else f"{s[key]:>{width}}"
                for _, width, key in columns
            )
        )
    target = os.environ.get("TIKTOK_FAULT_REPORT") or str(
        Path(settings.RUN_DIR) / "fault-matrix.json"
    )
    Path(target).write_text(json.dumps(SCENARIOS, indent=2, default=str) + "\n")
    write(f"figures written to {target}")
