"""The support matrix: the core suite on each supported Django, and on the declared floors."""

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import nox

ROOT = Path(__file__).resolve().parent

nox.options.default_venv_backend = "uv"
nox.options.error_on_missing_interpreters = True
nox.options.sessions = ["core", "oscar", "install", "lowest"]

# What runs everywhere but in the pinned full suite: no worker processes, browser or
# PostgreSQL. docs/support.md says what that leaves to the pinned run.
CORE_MARKERS = "not integration and not browser and not faults and not postgres"

# The slowest tests, about two thirds of the core suite's time, stay in the pinned full suite:
# the demo shop's commands, the 1,000-example boundary property, the hypothesis checks of
# hostile input and the feed's 100,000-row query count.
PINNED_ONLY = [
    "--ignore=tests/demo",
    "--ignore=tests/test_boundary_properties.py",
    "--ignore=tests/test_hostile_input.py",
    "--deselect=tests/test_readiness_feed.py::"
    "test_the_feed_takes_the_same_queries_for_10_rows_as_for_100000",
]

# Only the oscar test shop needs these; it runs in the pinned full suite alone.
OSCAR_ONLY = {
    "django-oscar",
    "babel",
    "django-extra-views",
    "django-haystack",
    "django-tables2",
    "django-treebeard",
    "django-widget-tweaks",
    "factory-boy",
    "faker",
    "pillow",
    "purl",
    "sorl-thumbnail",
}
# The matrix's own tools, not the suite's.
TOOLS = {"ruff", "nox", "uv"}

# hypothesis's last release for Python 3.10; the pinned one needs 3.11.
PY310_HYPOTHESIS = "hypothesis==6.168.5"

# One cell per supported Django: its Python, and the pins that differ from requirements.txt.
# django-celery-beat and django-payments declare which Django they take, so each cell takes a
# release that declares its Django.
CELLS = [
    (
        "3.10",
        "4.2",
        {
            "django": "Django==4.2.*",
            "celery": "celery[redis]==5.5.3",
            "kombu": "kombu==5.5.4",
            # kombu 5.5's redis extra takes redis up to 5.2.1.
            "redis": "redis==5.2.1",
            # 2.9.0 would do as well; 2.8.1 keeps an older beat tested.
            "django-celery-beat": "django-celery-beat==2.8.1",
            # 4.x needs Django 5.2.
            "django-payments": "django-payments==3.1.0",
            "hypothesis": PY310_HYPOTHESIS,
        },
    ),
    # The pinned full suite runs 5.2 on the default Python; this cell, on the newest.
    ("3.13", "5.2", {"django": "Django==5.2.*"}),
    ("3.12", "6.0", {"django": "Django==6.0.*"}),
    ("3.13", "6.1", {"django": "Django==6.1.*"}),
]
# django-celery-beat 2.9.0, its newest release, declares Django<6.1 and no release declares
# 6.1 yet: the 6.1 cell overrides that bound to show the two work together, and a shop on 6.1
# installs the package without the [beat] extra (docs/support.md).
WITHOUT_BEAT_RELEASE = {"6.1"}
OVERRIDES = {django: [f"Django=={django}.*"] for django in WITHOUT_BEAT_RELEASE}


def _pyenv_versions():
    """pyenv's shims run only the selected versions: select every installed 3.x, the current
    one first, so that python3.10 ... python3.13 are found by name."""
    pyenv = shutil.which("pyenv")
    if os.environ.get("PYENV_VERSION") or not pyenv:
        return
    try:
        current = (
            subprocess.run([pyenv, "version-name"], capture_output=True, text=True, check=True)
            .stdout.strip()
            .split(":")
        )
        installed = subprocess.run(
            [pyenv, "versions", "--bare", "--skip-aliases"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        return
    others = [v for v in installed if re.fullmatch(r"3\.\d+\.\d+", v) and v not in current]
    os.environ["PYENV_VERSION"] = ":".join(current + others)


_pyenv_versions()
# Never download an interpreter: a cell runs on one that is installed, or fails.
os.environ.setdefault("UV_PYTHON_DOWNLOADS", "never")


def _name(requirement):
    """The distribution name of a requirement line, normalised."""
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    return match.group(1).lower().replace("_", "-") if match else ""


def _pinned():
    """requirements.txt's pins, by name."""
    pins = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            pins[_name(line)] = line
    return pins


REPORTED = ("Django", "celery", "kombu", "django-celery-beat", "django-payments", "requests")


def _show_versions(session, *more):
    """What the cell resolved to, in its log."""
    names = (*REPORTED, *more)
    session.run(
        "python",
        "-c",
        "import sys; from importlib.metadata import version as v;"
        " print(*(f'{n} {v(n)}' for n in sys.argv[1:]), sep=', ')",
        *names,
    )


def _pytest(session, *args, python="python", env=None):
    """pytest, with a scratch folder of its own; exit code 5 (nothing ran) fails the cell."""
    session.run(
        python,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        *args,
        *session.posargs,
        # nox points TMPDIR into the work tree, where the docs tests take pytest's tmp_path for
        # a page of the repository.
        env={
            "TIKTOK_TEST_RUN_DIR": tempfile.mkdtemp(prefix="tiktok-matrix-"),
            "TMPDIR": tempfile.gettempdir(),
            **(env or {}),
        },
    )


def _run_core(session, *args):
    """The core suite."""
    _show_versions(session, "phonenumbers")
    _pytest(session, "-m", CORE_MARKERS, *PINNED_ONLY, *args)


def _install_pinned(session, django, changes, dropped):
    """requirements.txt's pins, without ``dropped`` and with ``changes``, and the package."""
    pins = _pinned()
    for name in dropped:
        pins.pop(name, None)
    pins.update(changes)
    tmp = Path(session.create_tmp())
    (tmp / "requirements.txt").write_text("\n".join(pins.values()) + "\n")
    args = ["-r", str(tmp / "requirements.txt")]
    if django in OVERRIDES:
        (tmp / "overrides.txt").write_text("\n".join(OVERRIDES[django]) + "\n")
        args += ["--override", str(tmp / "overrides.txt")]
    session.install(*args, "-e", ".")


@nox.session
@nox.parametrize(
    "python,django,changes",
    CELLS,
    ids=[f"django{django}" for _, django, _ in CELLS],
)
def core(session, django, changes):
    """The core suite on one supported Django, the rest pinned as in requirements.txt."""
    _install_pinned(session, django, changes, OSCAR_ONLY | TOOLS)
    _run_core(session)


# The Djangos besides the pinned one that django-oscar's pinned release allows, and the pins
# its dependencies need there: django-treebeard 5 and newer need Django 5.2, pillow 13 Python
# 3.11.
OSCAR_CHANGES = {
    "4.2": {"django-treebeard": "django-treebeard==4.7.1", "pillow": "pillow==12.3.0"},
    "6.0": {},
    "6.1": {},
}
OSCAR_DJANGOS = set(OSCAR_CHANGES)


@nox.session
@nox.parametrize(
    "python,django,changes",
    [cell for cell in CELLS if cell[1] in OSCAR_DJANGOS],
    ids=[f"django{django}" for _, django, _ in CELLS if django in OSCAR_DJANGOS],
)
def oscar(session, django, changes):
    """The oscar test shop (tests/oscar_shop: oscar's real checkout, dashboard and
    OrderCreator) on one more Django, django-oscar and the rest pinned as in requirements.txt."""
    _install_pinned(session, django, {**changes, **OSCAR_CHANGES[django]}, TOOLS)
    _show_versions(session, "django-oscar")
    _pytest(session, "--ds", "tests.oscar_shop.settings", "tests/oscar_shop")


# The pinned Django's install runs in the pinned full suite (tests/test_packaging.py).
INSTALL_CELLS = [(python, django) for python, django, _ in CELLS if django != "5.2"]


@nox.session(python=False)
@nox.parametrize(
    "python,django",
    INSTALL_CELLS,
    ids=[f"django{django}" for _, django in INSTALL_CELLS],
)
def install(session, python, django):
    """The wheel, installed with pip into a fresh virtualenv beside the newest Django of one
    release, runs a fresh startproject shop set up as the README says (tests/test_packaging.py,
    run from this environment). On a Django no django-celery-beat release declares, the shop
    installs no [beat] extra and schedules with beat_schedule()."""
    interpreter = shutil.which(f"python{python}")
    if interpreter is None:
        session.error(f"python{python} is not installed")
    _pytest(
        session,
        "tests/test_packaging.py",
        # The build and changelog tests do not depend on the shop's Django.
        "-k",
        "not build_makes and not changelog",
        # nox's own interpreter: the project's virtualenv, which has the test tools.
        python=sys.executable,
        env={
            "TIKTOK_PACKAGING_PYTHON": interpreter,
            "TIKTOK_PACKAGING_DJANGO": django,
            "TIKTOK_PACKAGING_SCHEDULER": (
                "celery" if django in WITHOUT_BEAT_RELEASE else "django-celery-beat"
            ),
        },
    )


# The suite's own tools, pinned; selenium is left out (it needs a newer urllib3 than the
# requests floor takes) with the browser tests it drives.
TEST_TOOLS = ["pytest", "pytest-django", "hypothesis", "django-environ"]

# Each dependency's modules, imported before the test tools are installed: pytest brings
# packaging, which hid that kombu's redis transport needs it.
FLOOR_IMPORTS = (
    "import django, celery, requests, phonenumbers, django_celery_beat, payments, psycopg;"
    " import kombu.transport.redis"
)


@nox.session(python="3.10")
def lowest(session):
    """The core suite on the lowest version of every dependency the package declares."""
    package = ".[beat,payments,redis,postgres]"
    session.install("--resolution=lowest-direct", "-e", package)
    session.run("python", "-c", FLOOR_IMPORTS)
    pins = _pinned()
    pins["hypothesis"] = PY310_HYPOTHESIS
    session.install(
        "--resolution=lowest-direct",
        "-e",
        package,
        *(pins[name] for name in TEST_TOOLS),
    )
    _run_core(session, "--ignore=tests/browser")
