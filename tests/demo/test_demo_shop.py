"""The demo shop, driven in subprocesses so its settings never mix with the test settings."""

import contextlib
import importlib.util
import json
import logging
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.processes import free_port, listening

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT = 90
# How the supervisor announces each child it starts (demo_shop/run.py).
CHILD_STARTED = re.compile(r" started \(pid (\d+)\)")
STOP_TIMEOUT = 30
# The worker's line once it takes tasks: the demo starts it without its banner.
WORKER_READY = re.compile(r"^\s*worker \| .*celery@\S+ ready\.$", re.MULTILINE)


def demo_env(tmp_path, **extra):
    """The environment of a demo process: its own settings, database, broker and ports."""
    env = {
        key: value
        for key, value in os.environ.items()
        # The suite's own database, broker and TikTok settings are not the demo's.
        if not key.startswith(("TIKTOK_", "DJANGO_", "CELERY_", "DATABASE_", "DEMO_"))
    }
    env.update(
        DJANGO_SETTINGS_MODULE="demo_shop.settings",
        DEMO_VAR_DIR=str(tmp_path / "var"),
        DATABASE_URL=f"sqlite:///{tmp_path / 'demo.sqlite3'}",
        CELERY_BROKER_URL="filesystem://",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


def run(env, *argv, timeout=120):
    return subprocess.run(
        [sys.executable, *argv],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def http_status(url):
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 (local URL)
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


class Supervisor:
    """``python -m demo_shop.run`` with its output collected line by line."""

    def __init__(self, env):
        self.process = subprocess.Popen(
            [sys.executable, "-m", "demo_shop.run"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines = queue.Queue()
        self.output = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.process.stdout:
            self.output.append(line)
            self.lines.put(line)

    def wait_for_line(self, text, timeout=START_TIMEOUT):
        """Read lines until one contains ``text`` (a string) or matches it (a pattern)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.5)
                if text.search(line) if isinstance(text, re.Pattern) else text in line:
                    return True
            except queue.Empty:
                if self.process.poll() is not None:
                    return False
        return False

    def stop(self):
        """SIGKILL the supervisor, then every child it started (each it announced with its
        pid): each runs in a session of its own, which the supervisor's death alone would
        leave running, and its process group goes with it (a worker's pool, say)."""
        children = [int(pid) for pid in CHILD_STARTED.findall("".join(self.output))]
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        for pid in children:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)


def test_check_reports_no_issues(tmp_path):
    result = run(demo_env(tmp_path), "manage.py", "check")
    assert result.returncode == 0, result.stderr
    assert "no issues" in result.stdout


def test_seed_demo_is_repeatable_and_prints_the_same_working_password(tmp_path):
    env = demo_env(tmp_path)
    assert run(env, "manage.py", "migrate", "--noinput", "-v", "0").returncode == 0
    first = run(env, "manage.py", "seed_demo")
    second = run(env, "manage.py", "seed_demo")
    assert first.returncode == second.returncode == 0, first.stderr + second.stderr
    assert "4 products ready" in second.stdout
    assert "Admin user created: username admin password " in first.stdout
    # One line, the same password, which is the one that logs in.
    [line] = [line for line in second.stdout.splitlines() if "password" in line]
    password = line.split()[-1]
    assert line == f"Admin user: username admin password {password}"
    assert first.stdout.split()[-1] == password
    assert (tmp_path / "var" / "admin-password").read_text().strip() == password
    assert (tmp_path / "var" / "admin-password").stat().st_mode & 0o077 == 0
    check = run(
        env,
        "manage.py",
        "shell",
        "-c",
        "from django.contrib.auth import authenticate; "
        f"print(authenticate(username='admin', password={password!r}) is not None)",
    )
    assert check.stdout.strip().splitlines()[-1] == "True", check.stdout + check.stderr


def test_selfcheck_buys_one_order_through_gateway_and_webhook(tmp_path):
    result = run(demo_env(tmp_path, DEMO_EAGER="1"), "-m", "demo_shop.selfcheck")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "selfcheck OK: order D1001 paid, Purchase order_D1001" in result.stdout


def test_the_demo_database_runs_in_wal_mode_with_a_busy_timeout_and_immediate_transactions(
    tmp_path,
):
    result = run(
        demo_env(tmp_path),
        "manage.py",
        "shell",
        "-c",
        "from django.db import connection\n"
        "with connection.cursor() as cursor:\n"
        "    print(cursor.execute('PRAGMA journal_mode').fetchone()[0])\n"
        "    print(cursor.execute('PRAGMA busy_timeout').fetchone()[0])\n"
        "print(connection.transaction_mode)",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # After the line Django 5.2's shell prints about its automatic imports.
    assert result.stdout.split()[-3:] == ["wal", "30000", "IMMEDIATE"]


def test_the_webhook_answers_503_with_retry_after_while_another_process_holds_the_lock(tmp_path):
    env = demo_env(tmp_path)
    assert run(env, "manage.py", "migrate", "--noinput", "-v", "0").returncode == 0
    assert run(env, "manage.py", "seed_demo").returncode == 0

    result = run(env, "-m", "tests.demo.locked_webhook")

    assert result.returncode == 0, result.stdout + result.stderr
    seen = json.loads(result.stdout.splitlines()[-1])
    assert seen == {
        "locked_status": 503,
        "locked_retry_after": "5",
        "paid_while_locked": False,
        # The gateway's next try goes through.
        "retried_status": 200,
        "paid": True,
    }
    # One line saying what happened, no traceback, no shopper's email.
    assert "Traceback" not in result.stderr
    [line] = [line for line in result.stderr.splitlines() if "database is busy" in line]
    assert "database is locked" in line and "answered 503" in line
    assert "@" not in result.stderr


@pytest.mark.integration
def test_make_demo_comes_up_and_stops_everything_on_ctrl_c(tmp_path):
    demo, shop_port, sandbox_port = start_demo(tmp_path)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not (listening(shop_port) and listening(sandbox_port)):
            assert time.monotonic() < deadline, "".join(demo.output)
            time.sleep(0.2)
        assert http_status(f"http://127.0.0.1:{shop_port}/") == 200
        assert http_status(f"http://127.0.0.1:{shop_port}/admin/login/") == 200
        demo.process.send_signal(signal.SIGINT)
        assert demo.process.wait(timeout=STOP_TIMEOUT) == 0, "".join(demo.output)
    finally:
        demo.stop()
    assert "All stopped." in "".join(demo.output)
    assert not listening(shop_port)
    assert not listening(sandbox_port)


@pytest.mark.integration
def test_demo_stops_when_a_child_keeps_dying_at_start(tmp_path):
    shop_port = free_port()
    # The sandbox cannot bind a port that is taken, so it exits at once.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        env = demo_env(tmp_path, DEMO_PORT=str(shop_port), SANDBOX_PORT=str(taken.getsockname()[1]))
        demo = Supervisor(env)
        try:
            code = demo.process.wait(timeout=START_TIMEOUT)
        finally:
            demo.stop()
    output = "".join(demo.output)
    assert code != 0, output
    # Started again with backoff, it cannot bind the port either: the demo gives up, saying so.
    assert re.search(
        r"sandbox exited with code 1 after \d+ s: restarting it in 1 s \(restart 1\)", output
    )
    assert "restarting it in 2 s (restart 2)" in output
    assert "sandbox exited with code 1 4 times in a row" in output
    assert not listening(shop_port)


def test_a_simulated_broken_pixel_turns_its_market_not_ready_and_clear_undoes_it(tmp_path):
    env = demo_env(tmp_path)
    assert run(env, "manage.py", "migrate", "--noinput", "-v", "0").returncode == 0
    assert run(env, "manage.py", "seed_demo").returncode == 0

    broken = run(env, "manage.py", "simulate_market_trouble", "--country", "DE")
    assert broken.returncode == 0, broken.stderr
    assert "DE is now not_ready:" in broken.stdout
    assert "pixel receipts stopped at" in broken.stdout
    health = run(env, "manage.py", "tiktok_health", "--market", "DE")
    assert health.returncode == 1, health.stdout + health.stderr
    assert "not_ready" in health.stdout

    cleared = run(env, "manage.py", "simulate_market_trouble", "--country", "DE", "--clear")
    assert cleared.returncode == 0, cleared.stderr
    assert "simulated orders removed" in cleared.stdout


def test_a_simulated_stopped_worker_turns_its_market_not_ready(tmp_path):
    env = demo_env(tmp_path)
    assert run(env, "manage.py", "migrate", "--noinput", "-v", "0").returncode == 0
    assert run(env, "manage.py", "seed_demo").returncode == 0
    argv = ("simulate_market_trouble", "--country", "US", "--trouble", "worker")
    stopped = run(env, "manage.py", *argv)
    assert stopped.returncode == 0, stopped.stderr
    assert "US is now not_ready:" in stopped.stdout
    assert "oldest undelivered purchase waiting 90 min" in stopped.stdout


def start_demo(tmp_path):
    """``python -m demo_shop.run`` on ports of its own, once its worker is ready:
    ``(supervisor, shop_port, sandbox_port)``; the caller stops it."""
    shop_port, sandbox_port = free_port(), free_port()
    env = demo_env(tmp_path, DEMO_PORT=str(shop_port), SANDBOX_PORT=str(sandbox_port))
    demo = Supervisor(env)
    try:
        assert demo.wait_for_line("Ctrl-C stops everything"), "".join(demo.output)
        assert demo.wait_for_line(WORKER_READY), "".join(demo.output)
    except BaseException:
        demo.stop()
        raise
    return demo, shop_port, sandbox_port


def started_pid(output, name, after=0):
    """The pid of the ``after``-th (0: first) start of child ``name`` the supervisor reported."""
    pids = re.findall(rf"\b{name} started \(pid (\d+)\)", "".join(output))
    return int(pids[after]) if len(pids) > after else None


@pytest.mark.integration
def test_the_demo_restarts_a_killed_worker_and_beat_and_keeps_serving(tmp_path):
    demo, shop_port, sandbox_port = start_demo(tmp_path)
    try:
        for name in ("worker", "beat"):
            first = started_pid(demo.output, name)
            assert first, "".join(demo.output)
            os.kill(first, signal.SIGKILL)
            assert demo.wait_for_line(f"{name} exited with code -9"), "".join(demo.output)
            assert demo.wait_for_line(f"{name} started (pid"), "".join(demo.output)
            second = started_pid(demo.output, name, after=1)
            assert second and second != first
        assert "restarting it in 1 s (restart 1)" in "".join(demo.output)
        # The new worker comes up, and the rest never went down.
        deadline = time.monotonic() + START_TIMEOUT
        while len(WORKER_READY.findall("".join(demo.output))) < 2:
            assert time.monotonic() < deadline, "".join(demo.output)
            time.sleep(0.2)
        assert demo.process.poll() is None, "".join(demo.output)
        assert http_status(f"http://127.0.0.1:{shop_port}/") == 200
        assert listening(sandbox_port)
        demo.process.send_signal(signal.SIGINT)
        assert demo.process.wait(timeout=STOP_TIMEOUT) == 0, "".join(demo.output)
    finally:
        demo.stop()


@pytest.mark.integration
def test_the_demo_keeps_the_periodic_tasks_routine_lines_out_of_its_output(tmp_path):
    demo, _shop_port, _sandbox_port = start_demo(tmp_path)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while "beat: Starting..." not in "".join(demo.output):
            assert time.monotonic() < deadline, "".join(demo.output)
            time.sleep(0.2)
        # Beat sends the outbox sweep every 10 s.
        time.sleep(15)
        demo.process.send_signal(signal.SIGINT)
        assert demo.process.wait(timeout=STOP_TIMEOUT) == 0, "".join(demo.output)
    finally:
        demo.stop()
    output = "".join(demo.output)
    # Beat saves its run counts as it stops: the sweep did run while the output was read.
    runs = run(
        demo_env(tmp_path),  # the demo's database: the ports do not matter here
        "manage.py",
        "shell",
        "-c",
        "from django_celery_beat.models import PeriodicTask\n"
        "print(PeriodicTask.objects.get(name='TikTok tracking: sweep outbox').total_run_count)",
    )
    assert int(runs.stdout.split()[-1]) >= 1, runs.stdout + runs.stderr
    assert "Sending due task TikTok tracking: sweep outbox" not in output
    assert not re.search(r"tiktok_tracking\.sweep_outbox\[\S+\] (received|succeeded)", output)
    assert "tiktok_tracking.sweep_outbox" not in output
    # What a newcomer wants to see is still there; the banners are not.
    assert len(WORKER_READY.findall(output)) == 1, output
    assert "beat: Starting..." in output
    assert "Ctrl-C stops everything." in output
    assert "[tasks]" not in output and "celery beat v" not in output


def demo_module(name):
    """One module of demo_shop, loaded from its file: importing the package would load the
    demo's Celery app and make it this process's current app, under the suite's checks."""
    spec = importlib.util.spec_from_file_location(f"demo_{name}", ROOT / "demo_shop" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_routine_filter_passes_other_tasks_and_what_goes_wrong():
    RoutineTaskLines = demo_module("logs").RoutineTaskLines

    def passes(level, message, *args):
        record = logging.LogRecord("celery.app.trace", level, __file__, 1, message, args, None)
        return RoutineTaskLines().filter(record)

    sweep, webhook = "tiktok_tracking.sweep_outbox", "store.tasks.deliver_gateway_webhook"
    received = "Task %(name)s[%(id)s] received"
    assert not passes(logging.INFO, received, {"name": sweep, "id": "1"})
    assert not passes(logging.INFO, "Sending due task %s (%s)", "sweep", sweep)
    assert passes(logging.INFO, received, {"name": "tiktok_tracking.deliver_events", "id": "2"})
    assert passes(logging.INFO, received, {"name": webhook, "id": "3"})
    assert passes(logging.ERROR, "Task %s raised unexpected: boom", sweep)
