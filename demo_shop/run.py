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


class Child:
    """One supervised process whose output lines are printed with its name in front."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        self.name = name
        # A session of its own: Ctrl-C reaches only the supervisor, which stops the children in
        # order instead of all of them racing to exit at once.
        self.process = subprocess.Popen(  # noqa: S603 (argv is built here, not from input)
            argv,
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.reader = threading.Thread(target=self._copy_output, daemon=True)
        self.reader.start()

    def _copy_output(self) -> None:
        prefix = f"{self.name:>8} | "
        for raw in self.process.stdout:
            line = raw.decode("utf-8", errors="replace").rstrip("\n")
            print(prefix + line, flush=True)

    def alive(self) -> bool:
        return self.process.poll() is None


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
            ],
        ),
        ("web", [PYTHON, "manage.py", "runserver", f"127.0.0.1:{demo_port}", "--noreload"]),
        (
            "worker",
            [PYTHON, "-m", "celery", "-A", "demo_shop", "worker", "--pool=solo", "-l", "INFO"],
        ),
        (
            "beat",
            [
                *(PYTHON, "-m", "celery", "-A", "demo_shop", "beat", "-l", "INFO"),
                *("--scheduler", "django_celery_beat.schedulers:DatabaseScheduler"),
            ],
        ),
    ]
    children: list[Child] = []
    for name, argv in specs:
        children.append(Child(name, argv, env))

    password = re.search(r"password (\S+)", seeded)
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
        dead = [child for child in children if not child.alive()]
        if dead:
            for child in dead:
                print(
                    f"{child.name} exited with code {child.process.returncode}: stopping the demo",
                    flush=True,
                )
            exit_code = 1
            break
    print("Stopping ...", flush=True)
    stop_all(children)
    print("All stopped.", flush=True)
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
