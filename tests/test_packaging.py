"""Packaging: the wheel, installed in a fresh virtualenv, runs a fresh ``startproject`` shop.

The shop is set up as README.md's "Install into a shop" says, then checked, migrated, its
thank-you page rendered and a payment delivered by a real Celery worker to the sandbox; every
step runs from the installed wheel, never from this checkout.

The support matrix (noxfile.py) runs this module once per supported Django: it names the
virtualenv's Python, the Django release and how beat learns the app's periodic tasks with
``TIKTOK_PACKAGING_PYTHON``, ``TIKTOK_PACKAGING_DJANGO`` and ``TIKTOK_PACKAGING_SCHEDULER``.
"""

import email
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

import tiktok_tracking
from tests.processes import terminate
from tiktok_tracking.schedule import SWEEP_TASK_NAME

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent
HELPERS = Path(__file__).resolve().parent / "packaging"
PACKAGE = "tiktok_tracking"
DIST_NAME = "django-tiktok-tracking"
# What the design card says a shop installs with the app, by canonical name.
RUNTIME_REQUIREMENTS = {"django", "celery", "requests", "phonenumbers"}

# The fresh virtualenv's Python and Django release (e.g. "6.1"); by default this Python and the
# newest Django the package allows.
VENV_PYTHON = os.environ.get("TIKTOK_PACKAGING_PYTHON") or sys.executable
DJANGO_RELEASE = os.environ.get("TIKTOK_PACKAGING_DJANGO", "")
# How beat learns the periodic tasks: "django-celery-beat" (the [beat] extra and its
# DatabaseScheduler, as the README's settings have it) or "celery" (celery's own beat with
# beat_schedule(), for a Django no django-celery-beat release declares).
SCHEDULER = os.environ.get("TIKTOK_PACKAGING_SCHEDULER", "django-celery-beat")
if SCHEDULER not in ("django-celery-beat", "celery"):
    raise ValueError(f"TIKTOK_PACKAGING_SCHEDULER={SCHEDULER!r}: 'django-celery-beat' or 'celery'")

PIXEL_ID = "CPACKAGETEST0001"
ACCESS_TOKEN = "packaging-test-token-0123456789"
TEST_EVENT_CODE = "TEST-PACKAGING"
ORDER_NUMBER = "PKG-1001"

# The test session's environment must not reach the fresh shop: its settings module, database,
# broker and import path would all point back at this checkout.
INHERITED_VARIABLES_DROPPED = {"PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV"}
INHERITED_PREFIXES_DROPPED = ("DJANGO_", "DATABASE_", "CELERY_", "TIKTOK_")

# pip's words when the package index cannot be reached, as opposed to a requirement it cannot meet.
INDEX_UNREACHABLE = re.compile(
    r"NewConnectionError|Failed to establish a new connection|Temporary failure in name "
    r"resolution|Name or service not known|Network is unreachable|No route to host|"
    r"ConnectTimeoutError|ProxyError|ReadTimeoutError"
)

# How the package tells a shop to install an extra (an optional integration's dependencies).
OPTIONAL_EXTRA_HINT = re.compile(rf"pip install ['\"]?{re.escape(DIST_NAME)}\[([\w,-]+)\]")

# The purchase call {% tiktok_purchase %} renders: properties, then options with the event_id.
PURCHASE_CALL = re.compile(
    r'window\.ttq\.track\("Purchase", (?P<properties>\{.*\}), (?P<options>\{"event_id":.*?\})\);'
)

# What README.md's "Install into a shop" tells a shop to add to its settings; environment
# variables read with os.environ, as a fresh startproject has no django-environ. The broker is the
# server-less filesystem one, so that the test needs no Redis.
SETTINGS_ADDITIONS = """

# django-tiktok-tracking
import os

INSTALLED_APPS += ["tiktok_tracking", "orders"]
MIDDLEWARE += ["tiktok_tracking.middleware.TikTokTrackingMiddleware"]

TIKTOK_TRACKING = {
    "PIXEL_ID": os.environ["TIKTOK_PIXEL_ID"],
    "ACCESS_TOKEN": os.environ["TIKTOK_ACCESS_TOKEN"],
    "API_URL": os.environ["TIKTOK_API_URL"],
    # So that the test sees beat send the sweep within seconds.
    "SWEEP_INTERVAL": 1,
}

BROKER_DIR = BASE_DIR / "broker"
(BROKER_DIR / "messages").mkdir(parents=True, exist_ok=True)
CELERY_BROKER_URL = "filesystem://"
CELERY_BROKER_TRANSPORT = "tiktok_tracking.broker:FilesystemTransport"
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "data_folder_in": str(BROKER_DIR / "messages"),
    "data_folder_out": str(BROKER_DIR / "messages"),
    "control_folder": str(BROKER_DIR / "control"),
}
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_TIMEOUT = 2
"""

# Each way of scheduling the periodic tasks, as README.md's "Install into a shop" has it.
SCHEDULER_SETTINGS = {
    "django-celery-beat": """
INSTALLED_APPS.insert(INSTALLED_APPS.index("tiktok_tracking"), "django_celery_beat")
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
""",
    "celery": """
from tiktok_tracking.schedule import beat_schedule

CELERY_BEAT_SCHEDULE = beat_schedule(TIKTOK_TRACKING)
CELERY_BEAT_SCHEDULE_FILENAME = str(BASE_DIR / "celerybeat-schedule")
""",
}

URLS_ADDITIONS = """

from django.urls import include

from orders.views import thanks

urlpatterns += [
    path("tiktok/", include("tiktok_tracking.urls")),
    path("orders/<str:number>/thanks/", thanks),
]
"""

# Celery's Django guide: the project package loads its Celery app.
PROJECT_INIT = """from .celery import app as celery_app

__all__ = ("celery_app",)
"""


# Processes ------------------------------------------------------------------------------------


def _text(output):
    if isinstance(output, bytes):
        return output.decode(errors="replace")
    return output or ""


def _show(args, stdout, stderr=""):
    command = " ".join(map(str, args))
    return f"$ {command}\n--- stdout ---\n{_text(stdout)}\n--- stderr ---\n{_text(stderr)}"


def run(args, *, cwd, env, timeout=120, ok=True):
    """Run a command to its end; fail the test with its output if it fails (and ``ok``)."""
    args = [str(arg) for arg in args]
    try:
        result = subprocess.run(
            args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"Not finished after {timeout} s:\n{_show(args, exc.stdout, exc.stderr)}")
    if ok and result.returncode != 0:
        pytest.fail(
            f"Exited with {result.returncode}:\n{_show(args, result.stdout, result.stderr)}"
        )
    return result


def run_pip(python, pip_args, *, cwd, env, what):
    """Run pip; skip the test when the package index cannot be reached, fail on anything else."""
    args = [python, "-m", "pip", *pip_args, "--timeout", "30", "--retries", "2"]
    result = run(args, cwd=cwd, env=env, timeout=600, ok=False)
    if result.returncode != 0:
        output = result.stdout + result.stderr
        unreachable = [line for line in output.splitlines() if INDEX_UNREACHABLE.search(line)]
        if unreachable:
            pytest.skip(f"{what}: the package index cannot be reached: {unreachable[0].strip()}")
        pytest.fail(f"{what} failed:\n{_show(args, result.stdout, result.stderr)}")
    return result


def session_free_environment():
    """This process's environment without what points at this checkout's project."""
    return {
        name: value
        for name, value in os.environ.items()
        if name not in INHERITED_VARIABLES_DROPPED
        and not name.startswith(INHERITED_PREFIXES_DROPPED)
    }


class Background:
    """A long-running process of the fresh shop, its output in a log file; stopped by stop()."""

    def __init__(self, args, *, cwd, env, log_path, stdout=None):
        self.args = [str(arg) for arg in args]
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            self.args,
            cwd=cwd,
            env=env,
            stdout=stdout or self._log,
            stderr=self._log,
        )

    def log(self):
        return Path(self.log_path).read_text(errors="replace")

    def describe(self):
        state = "running" if self.process.poll() is None else f"exited {self.process.returncode}"
        return f"$ {' '.join(self.args)} ({state})\n--- log ---\n{self.log()}"

    def wait_for_log(self, marker, timeout):
        """Wait for ``marker``, a string or a compiled pattern, in the log."""
        found = marker.search if isinstance(marker, re.Pattern) else marker.__contains__
        deadline = time.monotonic() + timeout
        while not found(self.log()):
            if self.process.poll() is not None:
                pytest.fail(f"Exited before {marker!r}:\n{self.describe()}")
            if time.monotonic() > deadline:
                pytest.fail(f"No {marker!r} after {timeout} s:\n{self.describe()}")
            time.sleep(0.1)

    def stop(self):
        terminate(self.process)
        if self.process.stdout:
            self.process.stdout.close()
        self._log.close()


def report_time(request, text):
    """One line on the terminal, outside pytest's capture, so CI logs show what packaging costs."""
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or capture is None:
        return
    with capture.global_and_fixture_disabled():
        reporter.write_line(f"packaging: {text}")


# The wheel ------------------------------------------------------------------------------------


def _not_built_from(directory, names):
    """What the build copy leaves out: caches, and the checkout's own build output and venvs."""
    skipped = {name for name in names if name == "__pycache__" or name.endswith(".pyc")}
    if Path(directory) == ROOT:
        prefixes = (".git", ".venv", ".env", ".pytest_cache", ".ruff_cache", ".hypothesis")
        skipped |= {
            name
            for name in names
            if name.startswith(prefixes)
            or name in ("build", "dist", "var")
            or name.endswith((".egg-info", ".sqlite3"))
        }
    return skipped


@dataclass
class Wheel:
    path: Path
    names: list[str]

    @property
    def dist_info(self):
        return f"{DIST_NAME.replace('-', '_')}-{tiktok_tracking.__version__}.dist-info"

    def read(self, name):
        with zipfile.ZipFile(self.path) as archive:
            return archive.read(name).decode()

    @property
    def metadata(self):
        return email.message_from_string(self.read(f"{self.dist_info}/METADATA"))


@pytest.fixture(scope="module")
def wheel(request, tmp_path_factory):
    """The wheel pip builds from the project root (copied first: see _not_built_from)."""
    work = tmp_path_factory.mktemp("packaging-build")
    source = work / "source"
    # A copy, because setuptools builds in the source tree: the checkout's build/ folder could
    # carry files deleted since into the wheel, and two test sessions would share it.
    shutil.copytree(ROOT, source, ignore=_not_built_from, symlinks=True)
    started = time.monotonic()
    # With build isolation, as `pip install .` and `python -m build` do: the backend declared in
    # pyproject.toml comes from the index, whatever this virtualenv has.
    run_pip(
        sys.executable,
        ["wheel", "--no-deps", "--wheel-dir", work / "dist", source],
        cwd=work,
        env=session_free_environment(),
        what="Building the wheel",
    )
    report_time(request, f"wheel built in {time.monotonic() - started:.1f} s")
    wheels = list((work / "dist").glob("*.whl"))
    assert len(wheels) == 1, f"Expected one wheel, found {wheels}"
    with zipfile.ZipFile(wheels[0]) as archive:
        return Wheel(wheels[0], archive.namelist())


def _package_files():
    """Every file of the package in the checkout, as a path inside the wheel."""
    return {
        path.relative_to(ROOT).as_posix()
        for path in (ROOT / PACKAGE).rglob("*")
        if path.is_file()
        and "__pycache__" not in path.parts
        and path.suffix != ".pyc"
        and not path.name.startswith(".")
    }


def test_wheel_holds_every_file_of_the_app_and_nothing_else(wheel):
    names = set(wheel.names)
    missing = sorted(_package_files() - names)
    assert not missing, f"Files of {PACKAGE}/ missing from {wheel.path.name}: {missing}"
    # And by name, what a shop cannot run without, so the check above cannot pass on an empty
    # checkout listing.
    for part in (
        f"{PACKAGE}/migrations/0001_initial.py",
        f"{PACKAGE}/templates/{PACKAGE}/pixel.html",
        f"{PACKAGE}/templates/admin/{PACKAGE}/dashboard.html",
        f"{PACKAGE}/templatetags/{PACKAGE}.py",
        f"{PACKAGE}/management/commands/tiktok_check.py",
        f"{PACKAGE}/management/commands/tiktok_resend.py",
        f"{PACKAGE}/management/commands/tiktok_reconcile.py",
        f"{PACKAGE}/sandbox/__main__.py",
        f"{PACKAGE}/sandbox/pixel.js",
    ):
        assert part in names, f"{part} missing from {wheel.path.name}"
    top_level = {name.split("/", 1)[0] for name in names}
    assert top_level == {PACKAGE, wheel.dist_info}, f"Unexpected top-level entries: {top_level}"
    stray = [
        name
        for name in names
        if "__pycache__" in name or name.endswith((".pyc", ".sqlite3", ".log"))
    ]
    assert not stray, f"Build leftovers in the wheel: {stray}"
    # A license named in the metadata ships its text.
    for license_file in ROOT.glob("LICEN[CS]E*"):
        assert any(name.endswith(f"/{license_file.name}") for name in names), (
            f"{license_file.name} is not in the wheel"
        )


def test_wheel_metadata(wheel):
    metadata = wheel.metadata
    assert metadata["Name"] == DIST_NAME
    assert metadata["Version"] == tiktok_tracking.__version__
    assert metadata["Requires-Python"], "Requires-Python is not set"
    assert metadata["Summary"]
    assert metadata["Description-Content-Type"] == "text/markdown"
    assert metadata["License"] or metadata["License-Expression"], "no license in the metadata"
    required = {
        re.split(r"[\s<>=!~;\[(]", requirement, maxsplit=1)[0].lower().replace("_", "-")
        for requirement in metadata.get_all("Requires-Dist", [])
        if "extra ==" not in requirement
    }
    assert required == RUNTIME_REQUIREMENTS, f"Requires-Dist names {sorted(required)}"
    # django-celery-beat only through the beat extra: no release of it declares every Django
    # the package supports, and a dependency on it would keep pip from installing on those.
    beat = [r for r in metadata.get_all("Requires-Dist", []) if r.startswith("django-celery-beat")]
    assert len(beat) == 1 and 'extra == "beat"' in beat[0], beat
    assert "Framework :: Django" in metadata.get_all("Classifier", [])
    # Every extra the package's messages tell a shop to install exists.
    extras = set(metadata.get_all("Provides-Extra", []))
    with zipfile.ZipFile(wheel.path) as archive:
        named = {
            (name, extra)
            for name in wheel.names
            if name.endswith(".py")
            for hint in OPTIONAL_EXTRA_HINT.finditer(archive.read(name).decode())
            for extra in hint.group(1).split(",")
        }
    undeclared = sorted(f"{name}: [{extra}]" for name, extra in named if extra not in extras)
    assert not undeclared, (
        f"Extras named in install hints but not declared (Provides-Extra: {sorted(extras)}): "
        f"{undeclared}"
    )
    assert f"{wheel.dist_info}/WHEEL" in wheel.names
    assert "Root-Is-Purelib: true" in wheel.read(f"{wheel.dist_info}/WHEEL")


# The fresh virtualenv and shop ----------------------------------------------------------------


@dataclass
class Venv:
    path: Path
    python: Path
    bin: Path
    env: dict


@pytest.fixture(scope="module")
def venv(request, wheel, tmp_path_factory):
    """A new virtualenv with the wheel installed; its dependencies come from the index."""
    path = tmp_path_factory.mktemp("packaging-venv") / "venv"
    env = session_free_environment()
    started = time.monotonic()
    result = run([VENV_PYTHON, "-m", "venv", path], cwd=path.parent, env=env, ok=False)
    if result.returncode != 0:
        pytest.skip(f"python -m venv cannot create a virtualenv here: {result.stderr.strip()}")
    bin_dir = path / "bin"
    env.update(VIRTUAL_ENV=str(path), PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}")
    created = time.monotonic()
    # pip's own cache (the user's) is reused: what the index served before is not fetched again.
    # --no-compile: compiling all of Django takes longer than the few modules the shop's
    # processes import, which they compile (and keep) themselves.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    requirements = [f"{wheel.path}[beat]" if SCHEDULER == "django-celery-beat" else wheel.path]
    if DJANGO_RELEASE:
        requirements.append(f"Django=={DJANGO_RELEASE}.*")
    run_pip(
        bin_dir / "python",
        ["install", "--no-compile", *requirements],
        cwd=path.parent,
        env=env,
        what="Installing the wheel",
    )
    report_time(
        request,
        f"virtualenv created in {created - started:.1f} s, "
        f"{' '.join(map(str, requirements))} and dependencies installed in "
        f"{time.monotonic() - created:.1f} s",
    )
    yield Venv(path, bin_dir / "python", bin_dir, env)
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def sandbox(venv, tmp_path_factory):
    """The sandbox, started from the installed package on a port the system picks."""
    log_dir = tmp_path_factory.mktemp("packaging-sandbox")
    process = Background(
        [
            venv.python,
            "-m",
            f"{PACKAGE}.sandbox",
            "--port",
            "0",
            "--token",
            ACCESS_TOKEN,
            "--pixel",
            PIXEL_ID,
        ],
        cwd=log_dir,
        env=venv.env,
        log_path=log_dir / "sandbox.log",
        stdout=subprocess.PIPE,
    )
    try:
        # Its first line on stdout is its base URL.
        url = process.process.stdout.readline().decode().strip()
        if not url.startswith("http://"):
            pytest.fail(f"The sandbox did not print its URL:\n{process.describe()}")
        yield url
    finally:
        process.stop()


def sandbox_get(url, path, **query):
    address = f"{url}/sandbox/{path}"
    if query:
        address += "?" + urllib.parse.urlencode(query)
    with urllib.request.urlopen(address, timeout=10) as answer:  # noqa: S310 - our own http URL
        return json.load(answer)


@dataclass
class Shop:
    path: Path
    venv: Venv
    env: dict

    def manage(self, *args, ok=True, env=None, timeout=120):
        return run(
            [self.venv.python, "manage.py", *args],
            cwd=self.path,
            env=env or self.env,
            ok=ok,
            timeout=timeout,
        )

    def shell(self, code):
        """The last line ``manage.py shell -c code`` prints (Django 5.2 first says what it
        imported automatically)."""
        return self.manage("shell", "-c", code).stdout.strip().splitlines()[-1]

    def script(self, name, *args):
        """Run one of tests/packaging's scripts in the shop; its JSON output, decoded."""
        result = run([self.venv.python, name, *args], cwd=self.path, env=self.env)
        return json.loads(result.stdout)


@pytest.fixture(scope="module")
def shop(request, venv, sandbox, tmp_path_factory):
    """A fresh ``django-admin startproject shop`` set up as the README says, and migrated."""
    base = tmp_path_factory.mktemp("packaging-shop")
    env = dict(
        venv.env,
        TIKTOK_PIXEL_ID=PIXEL_ID,
        TIKTOK_ACCESS_TOKEN=ACCESS_TOKEN,
        TIKTOK_API_URL=f"{sandbox}/open_api/v1.3/event/track/",
        PYTHONUNBUFFERED="1",
    )
    started = time.monotonic()
    run([venv.bin / "django-admin", "startproject", "shop", base], cwd=base, env=env)
    project = base / "shop"
    run([venv.python, "manage.py", "startapp", "orders"], cwd=base, env=env)
    with open(project / "settings.py", "a") as settings:
        settings.write(SETTINGS_ADDITIONS + SCHEDULER_SETTINGS[SCHEDULER])
    with open(project / "urls.py", "a") as urls:
        urls.write(URLS_ADDITIONS)
    (project / "__init__.py").write_text(PROJECT_INIT)
    shutil.copy(HELPERS / "shop_celery.py", project / "celery.py")
    shutil.copy(HELPERS / "orders_models.py", base / "orders" / "models.py")
    shutil.copy(HELPERS / "orders_views.py", base / "orders" / "views.py")
    (base / "orders" / "templates" / "orders").mkdir(parents=True)
    shutil.copy(HELPERS / "thanks.html", base / "orders" / "templates" / "orders" / "thanks.html")
    for script in ("checkout.py", "inspect_install.py"):
        shutil.copy(HELPERS / script, base / script)
    shop = Shop(base, venv, env)
    shop.manage("makemigrations", "orders")
    shop.manage("migrate", "--no-input")
    report_time(request, f"shop created and migrated in {time.monotonic() - started:.1f} s")
    return shop


@pytest.fixture(scope="module")
def worker(shop):
    """A real ``celery -A shop worker`` in the virtualenv, on the shop's filesystem broker."""
    process = Background(
        # The solo pool: one process is all the test needs, and it starts sooner.
        [
            shop.venv.bin / "celery",
            "-A",
            "shop",
            "worker",
            "--pool=solo",
            "--loglevel=INFO",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ],
        cwd=shop.path,
        env=shop.env,
        log_path=shop.path / "worker.log",
    )
    try:
        process.wait_for_log(" ready.", timeout=60)
        yield process
    finally:
        process.stop()


# What the shop sees -----------------------------------------------------------------------------


def test_the_shop_imports_every_module_from_the_virtualenv(shop, wheel):
    installed = shop.script("inspect_install.py")
    module_file = Path(installed["file"]).resolve()
    site_packages = {path.resolve() for path in shop.venv.path.glob("lib/python*/site-packages")}
    assert any(module_file.is_relative_to(path) for path in site_packages), (
        f"{PACKAGE} was imported from {module_file}, not the virtualenv's site-packages"
    )
    assert not module_file.is_relative_to(ROOT)
    assert installed["version"] == tiktok_tracking.__version__
    if DJANGO_RELEASE:
        assert installed["django"].startswith(f"{DJANGO_RELEASE}."), installed["django"]
    expected = {
        ".".join(Path(name).with_suffix("").parts).removesuffix(".__init__")
        for name in _package_files()
        if name.endswith(".py")
    }
    # The walk cannot see inside a package that does not import (judged below).
    unreachable = {
        module
        for module in expected
        for package in installed["failures"]
        if module.startswith(f"{package}.")
    }
    assert set(installed["modules"]) == expected - unreachable - {PACKAGE}
    # Only an integration with another package may fail to import, and then only by naming an
    # extra of this distribution that installs what it needs.
    extras = set(wheel.metadata.get_all("Provides-Extra", []))
    broken = []
    for name, error in installed["failures"].items():
        hint = OPTIONAL_EXTRA_HINT.search(error)
        asked = set(hint.group(1).split(",")) if hint else set()
        if not asked:
            broken.append(f"{name}:\n{error}")
        elif not asked <= extras:
            broken.append(
                f"{name} asks for the extra(s) {sorted(asked - extras)}, which the wheel does not "
                f"declare (Provides-Extra: {sorted(extras)}):\n{error}"
            )
    assert not broken, "Modules that do not import in a fresh install:\n" + "\n".join(broken)


def test_system_checks_pass_and_report_what_is_missing(shop):
    result = shop.manage("check")
    assert "System check identified no issues" in result.stdout, _show(
        ["manage.py", "check"], result.stdout, result.stderr
    )
    # The app's own checks run in the installed package: an unset token is an error, named.
    result = shop.manage("check", ok=False, env=dict(shop.env, TIKTOK_ACCESS_TOKEN=""))
    assert result.returncode != 0
    assert "tiktok_tracking.E002" in result.stderr, _show(
        ["manage.py", "check"], result.stdout, result.stderr
    )
    # The migrations shipped in the wheel match the models shipped beside them.
    shop.manage("makemigrations", "--check", "--dry-run", PACKAGE)


def browser_purchase(page):
    """``(properties, event_id)`` of the thank-you page's ``ttq.track("Purchase", ...)`` call."""
    call = PURCHASE_CALL.search(page)
    assert call, f"No ttq.track Purchase call on the thank-you page:\n{page}"
    return json.loads(call["properties"]), json.loads(call["options"])["event_id"]


def test_a_paid_order_reaches_the_sandbox_with_the_pages_event_id(shop, sandbox, worker):
    done = shop.script("checkout.py", ORDER_NUMBER)
    page = done["page"]
    assert done["page_status"] == 200, page
    # The thank-you page: the pixel's base code, the app's endpoints, the purchase.
    assert f'ttq.load("{PIXEL_ID}")' in page, page
    assert '"receiptUrl":"/tiktok/receipt/"' in page, page
    properties, browser_event_id = browser_purchase(page)
    assert browser_event_id == f"order_{ORDER_NUMBER}"
    # The server lane recorded the same purchase, with the same id.
    assert (done["event"], done["event_id"]) == ("Purchase", browser_event_id), done

    deadline = time.monotonic() + 30
    while not (events := sandbox_get(sandbox, "events", event_id=browser_event_id)):
        if time.monotonic() > deadline:
            pytest.fail(
                f"The sandbox got no {browser_event_id} in 30 s; it got "
                f"{sandbox_get(sandbox, 'requests')}\nworker:\n{worker.describe()}"
            )
        time.sleep(0.2)
    assert len(events) == 1, events
    (event,) = events
    assert (event["pixel"], event["event"]) == (PIXEL_ID, "Purchase")
    sent = event["item"]["properties"]
    for key in ("value", "currency", "contents"):
        assert sent[key] == properties[key], (
            f"{key}: server {sent[key]!r}, page {properties[key]!r}"
        )
    assert (sent["value"], sent["currency"]) == (49.9, "EUR")

    # The worker recorded TikTok's answer on the shop's row.
    status = (
        f"from {PACKAGE}.models import TrackedEvent; "
        f"print(TrackedEvent.objects.get(event_id={browser_event_id!r}).status)"
    )
    deadline = time.monotonic() + 10
    while (row_status := shop.shell(status)) != "delivered":
        if time.monotonic() > deadline:
            pytest.fail(
                f"The row of {browser_event_id} is {row_status!r}, not delivered:\n"
                f"{worker.describe()}"
            )
        time.sleep(0.5)


def test_beat_sends_the_periodic_tasks_the_worker_runs(shop, worker):
    """A real beat, scheduled as the README says (by migrate into django-celery-beat's tables,
    or by beat_schedule()), sends the sweep, and the worker runs it."""
    if SCHEDULER == "django-celery-beat":
        scheduled = json.loads(
            shop.shell(
                "import json; from django_celery_beat.models import PeriodicTask; "
                "print(json.dumps(list(PeriodicTask.objects.values_list('task', flat=True))))"
            )
        )
        scheduler = ["--scheduler", "django_celery_beat.schedulers:DatabaseScheduler"]
    else:
        scheduled = json.loads(
            shop.shell(
                "import json; from celery import current_app; print(json.dumps("
                "[entry['task'] for entry in current_app.conf.beat_schedule.values()]))"
            )
        )
        scheduler = []
    ours = {task for task in scheduled if task.startswith(f"{PACKAGE}.")}
    assert {f"{PACKAGE}.sweep_outbox", f"{PACKAGE}.purge_personal_data"} <= ours, scheduled
    # The worker's banner lists the tasks it has registered.
    unknown = [task for task in ours if f". {task}\n" not in worker.log()]
    assert not unknown, f"Scheduled but unknown to the worker: {unknown}\n{worker.describe()}"

    beat = Background(
        [shop.venv.bin / "celery", "-A", "shop", "beat", "--loglevel=INFO", *scheduler],
        cwd=shop.path,
        env=shop.env,
        log_path=shop.path / "beat.log",
    )
    try:
        # SWEEP_INTERVAL is 1 second in the shop's settings.
        beat.wait_for_log(f"Sending due task {SWEEP_TASK_NAME}", timeout=60)
        worker.wait_for_log(
            re.compile(rf"Task {PACKAGE}\.sweep_outbox\[[^\]]+\] succeeded"), timeout=30
        )
    finally:
        beat.stop()


def test_tiktok_check_sends_a_test_event_to_the_sandbox(shop, sandbox):
    result = shop.manage("tiktok_check", "--send-test-event", "--test-event-code", TEST_EVENT_CODE)
    assert "Verdict: delivered" in result.stdout, _show(
        ["tiktok_check"], result.stdout, result.stderr
    )
    assert ACCESS_TOKEN not in result.stdout + result.stderr
    events = [
        event
        for event in sandbox_get(sandbox, "events")
        if event["test_event_code"] == TEST_EVENT_CODE
    ]
    assert len(events) == 1, events
    assert events[0]["event_id"] in result.stdout


# The release build ----------------------------------------------------------------------------


def test_python_m_build_makes_an_sdist_and_a_wheel_that_twine_accepts(tmp_path):
    """What `make dist` does before a release: both archives, checked as PyPI would; the wheel
    built from the sdist alone holds what the one built from the checkout holds."""
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, ignore=_not_built_from, symlinks=True)
    env = session_free_environment()
    result = run(
        [sys.executable, "-m", "build", "--outdir", tmp_path / "dist", source],
        cwd=tmp_path,
        env=env,
        timeout=600,
        ok=False,
    )
    if result.returncode != 0 and INDEX_UNREACHABLE.search(result.stdout + result.stderr):
        pytest.skip("python -m build: the package index cannot be reached")
    assert result.returncode == 0, _show(["python", "-m", "build"], result.stdout, result.stderr)
    version = tiktok_tracking.__version__
    stem = DIST_NAME.replace("-", "_")
    sdist = tmp_path / "dist" / f"{stem}-{version}.tar.gz"
    wheel_path = tmp_path / "dist" / f"{stem}-{version}-py3-none-any.whl"
    assert sdist.exists() and wheel_path.exists(), sorted((tmp_path / "dist").iterdir())
    run(
        [sys.executable, "-m", "twine", "check", "--strict", sdist, wheel_path],
        cwd=tmp_path,
        env=env,
    )
    with tarfile.open(sdist) as archive:
        in_sdist = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    for needed in ("LICENSE", "README.md", "pyproject.toml", "CHANGELOG.md"):
        assert needed in in_sdist, f"{needed} missing from {sdist.name}"
    with zipfile.ZipFile(wheel_path) as archive:
        in_wheel = {name for name in archive.namelist() if name.startswith(f"{PACKAGE}/")}
    missing = sorted(_package_files() - in_wheel)
    assert not missing, f"Files of {PACKAGE}/ missing from {wheel_path.name}: {missing}"


CHANGELOG_VERSION = re.compile(r"^## (?P<version>\d+\.\d+\.\d+) - (?P<date>\d{4}-\d{2}-\d{2})$")


def test_the_changelog_has_a_section_per_version_newest_first():
    """docs/releasing.md: changes gather under "Unreleased"; a release renames that section to
    its version and date, the one __version__ names."""
    headings = [
        line
        for line in (ROOT / "CHANGELOG.md").read_text(encoding="utf-8").splitlines()
        if line.startswith("## ")
    ]
    unreleased = bool(headings) and headings[0] == "## Unreleased"
    released = []
    for heading in headings[1:] if unreleased else headings:
        match = CHANGELOG_VERSION.match(heading)
        assert match, f"CHANGELOG.md: {heading!r} is not '## X.Y.Z - YYYY-MM-DD'"
        released.append((tuple(map(int, match["version"].split("."))), match["date"]))
    assert unreleased or released, "CHANGELOG.md has no section"
    assert released == sorted(released, reverse=True), "versions must come newest first"
    if not unreleased:
        # Released: the package says the version its newest section names.
        assert headings[0].startswith(f"## {tiktok_tracking.__version__} - "), headings[0]
