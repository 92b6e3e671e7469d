"""The fault matrix: 1,000 paid orders per scenario through real workers on PostgreSQL + Redis.

Each scenario strikes while orders are being paid and delivered, then judges from the
sandbox's records: every committed order that consent allows is counted by TikTok exactly
once, nothing is sent for rolled-back or withheld orders, and the outbox agrees.
"""

import os
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connections
from django.test import Client

from tests.conftest import publishing_to, skip_unless_required, wait_until
from tests.faults.brokers import restartable_broker
from tests.faults.conftest import ORDERS, finish, needs_services
from tests.faults.harness import OrderBook, Status
from tests.faults.proxy import BLACKHOLE, FORWARD, REFUSE
from tiktok_tracking.models import DeliveryAnswer, DeliveryAttempt

pytestmark = needs_services

DEFAULT_PORTS = {"redis": 6379, "amqp": 5672}
# Longer than the client's TIMEOUT (2 s in the test settings): the client gives up first.
SLOW_ANSWER = 3.0


def transient_attempts(book):
    return DeliveryAttempt.objects.filter(
        tracked_event__order_id__startswith=book.prefix, answer__outcome="transient"
    ).count()


def start_fleet(cluster, workers=2, **env):
    for _ in range(workers):
        cluster.worker(**env)
    cluster.beat(**env)


def broker_address():
    parts = urlsplit(settings.CELERY_BROKER_URL)
    return parts.hostname, parts.port or DEFAULT_PORTS[parts.scheme]


# --- TikTok answers badly --------------------------------------------------------------------


def with_scripted_answers(name, sandbox, cluster, book, answers, *, allow_resends=False):
    """Pay the standard mix while TikTok gives ``answers``, once at the start, once at half."""
    start_fleet(cluster)
    sandbox.program(answers)
    book.paid_mix(ORDERS, before_half=lambda: sandbox.program(answers))
    return finish(name, book, sandbox, allow_resends=allow_resends)


def test_api_503_bursts(sandbox, cluster, book):
    burst = [{"status": 503, "body": "<html><body>503 Service Unavailable</body></html>"}] * 6
    with_scripted_answers("API 503 bursts", sandbox, cluster, book, burst)
    assert transient_attempts(book) > 0


def test_rate_limit_storms(sandbox, cluster, book):
    storm = [{"code": 40100, "message": "Too many requests. Please retry in some time."}] * 15
    with_scripted_answers("40100 storms", sandbox, cluster, book, storm)
    assert DeliveryAnswer.objects.filter(code=40100).exists()


def test_timeouts(sandbox, cluster, book):
    slow = [{"delay": SLOW_ANSWER}] * 3
    # TikTok received the requests the client stopped waiting for: the resends carry the
    # same event_ids, which TikTok deduplicates.
    with_scripted_answers("timeouts", sandbox, cluster, book, slow, allow_resends=True)
    assert DeliveryAnswer.objects.filter(message__startswith="Timed out").exists()


def test_connection_refused(sandbox, cluster, book, proxy):
    api = proxy(sandbox.host, sandbox.port)
    start_fleet(cluster, TIKTOK_API_URL=api.url_for(sandbox.events_url))
    api.set_mode(REFUSE)

    def back_up():
        wait_until(lambda: transient_attempts(book), message="a refused connection")
        api.set_mode(FORWARD)

    book.paid_mix(ORDERS, before_half=back_up)
    finish("connection refused", book, sandbox)
    assert DeliveryAnswer.objects.filter(message__contains="ConnectionError").exists()


def test_parameter_error_for_some_events(sandbox, cluster, book):
    start_fleet(cluster)

    def refuse_some(allowed):
        # One order in fifty carries data TikTok refuses: each must fail alone, with the
        # reason, and never sink the good events batched with it.
        sandbox.reject_events(book.reject(allowed[::50]))

    book.paid_mix(ORDERS, after_create=refuse_some)
    figures = finish("40002 for some events", book, sandbox)
    assert figures["statuses"][Status.FAILED] == len(book.rejected)
    failed = book.rows().filter(status=Status.FAILED).values_list("last_error", flat=True)
    assert all("Not a valid number" in error for error in failed)


def test_malformed_answers(sandbox, cluster, book):
    garbage = [
        {"status": 200, "body": "<html><body>Oops</body></html>"},
        {"status": 200, "body": ""},
        {"status": 200, "body": '{"code": "zero", "message": 7}'},
        {"status": 200, "body": '{"message": "no code at all"}'},
        {"status": 502, "body": "Bad Gateway"},
        {"drop": True},
    ]
    with_scripted_answers("malformed answers", sandbox, cluster, book, garbage)
    assert transient_attempts(book) > 0


# --- the broker fails ----------------------------------------------------------------------


def test_broker_down_at_commit_then_back(sandbox, cluster, book, proxy):
    broker = proxy(*broker_address())
    through_proxy = broker.url_for(settings.CELERY_BROKER_URL)
    # Shop, workers and beat all reach the broker through the proxy: all lose it together.
    start_fleet(cluster, CELERY_BROKER_URL=through_proxy)

    def back_up():
        assert sandbox.events() == [], "delivered while the broker was down"
        broker.set_mode(FORWARD)

    with publishing_to(through_proxy, flush_timeout=60):
        broker.set_mode(REFUSE)
        book.paid_mix(ORDERS, before_half=back_up)
    figures = finish("broker down at commit, then back", book, sandbox)
    # The checkout did not wait for the broker.
    assert figures["checkout_max_ms"] < 1000


def test_broker_blackholed(sandbox, cluster, book, proxy):
    broker = proxy(*broker_address())
    through_proxy = broker.url_for(settings.CELERY_BROKER_URL)
    # The shop's link to the broker accepts and never answers; the workers' link is fine.
    start_fleet(cluster)
    broker.set_mode(BLACKHOLE)
    with publishing_to(through_proxy, flush_timeout=120):
        book.paid_mix(ORDERS)
        assert broker.accepted, "the shop never tried the blackholed broker"
        figures = finish("broker blackholed", book, sandbox)
        broker.set_mode(FORWARD)
    # No checkout hung on the broker: each took what the receiver takes.
    assert figures["checkout_max_ms"] < 1000


def test_broker_restarted_mid_run(sandbox, cluster, book):
    with restartable_broker(settings.CELERY_BROKER_URL) as (broker, reason):
        if broker is None:
            skip_unless_required(reason)
        url, restart = broker
        # Slow answers keep batches in flight, and wake-ups queued, when the broker goes.
        sandbox.set_latency(0.3)
        start_fleet(cluster, CELERY_BROKER_URL=url)

        def restart_mid_run():
            seen = len(sandbox.requests)
            wait_until(lambda: len(sandbox.requests) > seen, timeout=60, message="deliveries")
            restart()

        with publishing_to(url, flush_timeout=120):
            book.paid_mix(ORDERS, before_half=restart_mid_run)
            figures = finish("broker restarted mid-run", book, sandbox, timeout=180)
    assert all(process.process.poll() is None for process in cluster.processes), (
        "a worker or beat died with the broker"
    )
    workers = [process for process in cluster.processes if process.kind == "worker"]
    assert all("Connection to broker lost" in worker.log() for worker in workers), (
        "a worker never lost the broker: it was not restarted under it"
    )
    assert figures["checkout_max_ms"] < 1000


# --- processes die ---------------------------------------------------------------------------


def child_pids(pid):
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(child) for child in path.read_text().split()] if path.exists() else []


def kill_mid_request(sandbox, book, kill):
    """Wait for a request to be on the wire (the sandbox answers slowly), then ``kill``."""
    seen = len(sandbox.requests)
    wait_until(lambda: len(sandbox.requests) > seen, timeout=60, message="a request in flight")
    kill()
    # Killed mid-batch: its rows are left SENDING until their lease runs out.
    assert book.rows().filter(status=Status.SENDING).exists()


def test_worker_main_process_killed_mid_batch(sandbox, cluster, book):
    sandbox.set_latency(0.5)
    workers = [cluster.worker()]
    cluster.beat()

    def strike():
        kill_mid_request(sandbox, book, workers[-1].kill)
        workers.append(cluster.worker())

    book.paid_mix(ORDERS, before_half=strike)
    strike()
    finish(
        "worker SIGKILL (main process)",
        book,
        sandbox,
        allow_resends=True,
        kills=2,
    )


def test_worker_pool_child_killed_mid_batch(sandbox, cluster, book):
    sandbox.set_latency(0.5)
    worker = cluster.worker(prefork=True)
    cluster.beat()
    kills = []

    def kill_child():
        # Read at the moment of the kill: the child of an earlier strike has been replaced.
        child = wait_until(lambda: child_pids(worker.pid), message="a pool child")[0]
        os.kill(child, 9)
        kills.append(child)

    def strike():
        kill_mid_request(sandbox, book, kill_child)

    book.paid_mix(ORDERS, before_half=strike)
    strike()
    finish(
        "worker SIGKILL (pool child)",
        book,
        sandbox,
        allow_resends=True,
        kills=len(kills),
    )
    assert worker.process.poll() is None, "the worker's main process died with its child"


def postgres_restart_command():
    """The command that restarts the local cluster, or None where this process cannot."""
    host = settings.DATABASES["default"].get("HOST") or "localhost"
    versions = sorted(os.listdir("/etc/postgresql")) if os.path.isdir("/etc/postgresql") else []
    if host not in ("127.0.0.1", "localhost") or not versions:
        return None
    if not shutil.which("pg_ctlcluster") or os.geteuid() != 0:
        return None
    return ["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1], "main", "restart"]


def test_postgres_restarted_mid_run(sandbox, cluster, book):
    command = postgres_restart_command()
    if command is None:
        skip_unless_required("restarting PostgreSQL needs a local cluster and root (pg_ctlcluster)")
    sandbox.set_latency(0.3)
    start_fleet(cluster)

    def restart():
        seen = len(sandbox.requests)
        wait_until(lambda: len(sandbox.requests) > seen, timeout=60, message="deliveries")
        connections.close_all()
        subprocess.run(command, check=True, timeout=120, capture_output=True)
        connections.close_all()
        wait_until(postgres_answers, timeout=60, message="PostgreSQL to come back")

    book.paid_mix(ORDERS, before_half=restart)
    finish(
        "PostgreSQL restarted mid-run",
        book,
        sandbox,
        allow_resends=True,
        timeout=180,
    )
    assert all(process.process.poll() is None for process in cluster.processes), (
        "a worker or beat died with the database connection"
    )


def postgres_answers():
    try:
        connections["default"].ensure_connection()
        return True
    except Exception:
        connections.close_all()
        return False


# --- the shop and the people misbehave ----------------------------------------------------


def test_duplicate_signals(sandbox, cluster, book):
    start_fleet(cluster)
    # Each payment confirmed twice at once from two threads, each sending the signal twice.
    book.paid_mix(ORDERS, threads=4, signals=2, twice=True)
    finish("duplicate signals", book, sandbox)
    assert book.rows().count() == book.committed


def test_revoked_token_fixed_and_resent_from_the_admin(sandbox, cluster, book):
    start_fleet(cluster, TIKTOK_ACCESS_TOKEN="revoked-token-000000")
    book.paid_mix(ORDERS)
    wait_until(
        lambda: book.unfinished() == 0, timeout=120, interval=0.2, message="every 40001 answer"
    )
    failed = book.rows().filter(status=Status.FAILED, last_code=40001)
    assert failed.count() == len(book.expected)
    assert sandbox.events() == []

    # The shop fixes the token and restarts its workers; the admin resends every failed row.
    cluster.stop()
    start_fleet(cluster)
    admin = get_user_model().objects.create_superuser("ops", "ops@example.com", "pw")
    client = Client()
    client.force_login(admin)
    response = client.post(
        "/admin/tiktok_tracking/trackedevent/?status__exact=failed",
        {
            "action": "resend",
            "select_across": "1",
            "index": "0",
            "_selected_action": [failed.first().pk],
        },
        follow=True,
    )
    assert response.status_code == 200
    assert f"{len(book.expected)} events queued to be sent again" in response.content.decode()
    figures = finish("revoked token, resent from admin", book, sandbox)
    assert figures["attempts"]["permanent"] == len(book.expected)


def withdraw_consent(order):
    client = Client()
    client.cookies["tiktok_vid"] = OrderBook.visitor_of(order)
    client.cookies["country"] = order.country
    response = client.post("/tiktok/consent/", {"status": "denied", "source": "banner"})
    assert response.status_code == 200, response.content


def test_consent_withdrawn_before_delivery(sandbox, cluster, book):
    # Paid while no worker runs, so every withdrawal lands before its delivery.
    us = book.create(ORDERS * 7 // 10)
    eu = book.create(ORDERS - len(us), country="DE", visitor_consent="granted")
    book.pay(us)
    book.pay(eu)
    withdrawn = eu[::2]
    for order in withdrawn:
        withdraw_consent(order)
    book.withdraw(withdrawn)

    start_fleet(cluster)
    finish("consent withdrawn before delivery", book, sandbox)
    reasons = set(
        book.rows().filter(event_id__in=book.withheld).values_list("suppressed_reason", flat=True)
    )
    assert reasons == {"consent changed before delivery: consent denied (DE)"}
