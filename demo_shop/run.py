"""``make demo``: migrate, seed, then run the sandbox, the shop, a worker and beat together."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STOP_GRACE_SECONDS = 10
PYTHON = sys.executable
# A child that dies is started again after 1, 2, 4 ... seconds, at most MAX_BACKOFF_SECONDS;
# once it has run for STABLE_SECONDS its next death starts the count again. One that dies
# within STABLE_SECONDS of each of GIVE_UP_AFTER starts in a row (a port taken, a broken
# setting) stops the demo: restarting it cannot help.
MAX_BACKOFF_SECONDS = 30
STABLE_SECONDS = 20
GIVE_UP_AFTER = 4


class Child:
    """One supervised process whose output lines are printed with its name in front; started
    again with backoff when it dies (see :meth:`supervise`)."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.quick_deaths = 0
        self.restart_at: float | None = None
        self.restarts = 0
        self._start()

    def _start(self) -> None:
        # A session of its own: Ctrl-C reaches only the supervisor, which stops the children in
        # order instead of all of them racing to exit at once.
        self.process = subprocess.Popen(  # noqa: S603 (argv is built here, not from input)
            self.argv,
            cwd=ROOT,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.started_at = time.monotonic()
        say(f"{self.name} started (pid {self.process.pid})")
        self.reader = threading.Thread(target=self._copy_output, daemon=True)
        self.reader.start()

    def _copy_output(self) -> None:
        prefix = f"{self.name:>8} | "
        for raw in self.process.stdout:
            line = raw.decode("utf-8", errors="replace").rstrip("\n")
            print(prefix + line, flush=True)

    def alive(self) -> bool:
        return self.process.poll() is None

    def supervise(self, now: float) -> bool:
        """Look after the child once; False when it keeps dying at start (stop the demo)."""
        if self.restart_at is not None:
            if now >= self.restart_at:
                self.restart_at = None
                self.restarts += 1
                self._start()
            return True
        if self.alive():
            return True
        code = self.process.returncode
        self.reader.join(timeout=2)
        ran = now - self.started_at
        self.quick_deaths = self.quick_deaths + 1 if ran < STABLE_SECONDS else 1
        if self.quick_deaths >= GIVE_UP_AFTER:
            say(
                f"{self.name} exited with code {code} {self.quick_deaths} times in a row, each "
                f"within {STABLE_SECONDS} s of its start: stopping the demo"
            )
            return False
        delay = min(2 ** (self.quick_deaths - 1), MAX_BACKOFF_SECONDS)
        say(
            f"{self.name} exited with code {code} after {ran:.0f} s: restarting it in "
            f"{delay} s (restart {self.restarts + 1})"
        )
        self.restart_at = now + delay
        return True


def say(line: str) -> None:
    """A line of the supervisor's own."""
    print(f"{'demo':>8} | {line}", flush=True)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["DJANGO_SETTINGS_MODULE"] = "demo_shop.settings"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _manage(env: dict[str, str], *args: str) -> str:
    """Run a manage.py command to completion; its output, or exit the demo if it failed."""
    result = subprocess.run(  # noqa: S603 (argv is built here, not from input)
        [PYTHON, "manage.py", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        print(result.stdout, end="")
        sys.exit(f"manage.py {' '.join(args)} failed with exit code {result.returncode}")
    return result.stdout


def stop_all(children: list[Child]) -> None:
    """SIGTERM every child, wait up to STOP_GRACE_SECONDS, then SIGKILL what is left."""
    for child in children:
        if child.alive():
            child.process.terminate()
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    for child in children:
        try:
            child.process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            print(f"{child.name} did not stop in {STOP_GRACE_SECONDS} s: killing it", flush=True)
            child.process.kill()
            child.process.wait()
    for child in children:
        child.reader.join(timeout=2)


def main() -> int:
    os.chdir(ROOT)
    env = _env()
    os.environ.update(env)
    sys.path.insert(0, str(ROOT))
    # Only the settings module: the ports and the token are read where the shop reads them.
    from django.conf import settings

    demo_port = settings.DEMO_PORT
    sandbox_port = settings.SANDBOX_PORT
    token = settings.TIKTOK_TRACKING["ACCESS_TOKEN"]

    print("Migrating the database ...", flush=True)
    _manage(env, "migrate", "--noinput", "-v", "0")
    seeded = _manage(env, "seed_demo")
    print(seeded, end="", flush=True)

    stopping = threading.Event()

    def request_stop(signum, frame):
        stopping.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)

    specs = [
        (
            "sandbox",
            [
                *(PYTHON, "-m", "tiktok_tracking.sandbox", "--verbose"),
                *("--port", str(sandbox_port), "--token", token),
                # What it received survives a restart of the demo (its page has "Clear").
                *("--store", str(settings.VAR_DIR / "sandbox.jsonl")),
            ],
        ),
        ("web", [PYTHON, "manage.py", "runserver", f"127.0.0.1:{demo_port}", "--noreload"]),
        # --quiet: no banners (the worker's is 25 lines); "celery@... ready." and "beat:
        # Starting..." still say that each is up.
        (
            "worker",
            [
                *(PYTHON, "-m", "celery", "-A", "demo_shop", "--quiet", "worker"),
                *("--pool=solo", "-l", "INFO"),
            ],
        ),
        (
            "beat",
            [
                *(PYTHON, "-m", "celery", "-A", "demo_shop", "--quiet", "beat", "-l", "INFO"),
                *("--scheduler", "django_celery_beat.schedulers:DatabaseScheduler"),
            ],
        ),
    ]
    children: list[Child] = []
    for name, argv in specs:
        children.append(Child(name, argv, env))

    password = re.search(r"username \S+ password (\S+)", seeded)
    credentials = f"user admin, password {password.group(1) if password else '(see above)'}"
    print(
        "\n"
        f"  Shop:     http://127.0.0.1:{demo_port}/\n"
        f"  Admin:    http://127.0.0.1:{demo_port}/admin/   ({credentials})\n"
        f"  Sandbox:  {settings.SANDBOX_PAGE_URL}\n"
        "  Ctrl-C stops everything.\n",
        flush=True,
    )

    exit_code = 0
    while not stopping.wait(0.5):
        now = time.monotonic()
        if not all([child.supervise(now) for child in children]):
            exit_code = 1
            break
    print("Stopping ...", flush=True)
    stop_all(children)
    print("All stopped.", flush=True)
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
