# Everything a developer runs: the virtualenv is created and reused on its own.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test lint format matrix sandbox demo bench bench-distance soak audit clean dist

$(STAMP): requirements.txt pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	@touch $(STAMP)

# Two sessions: the suite, then the django-oscar shop, which needs oscar's own settings.
test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)
	$(BIN)/python -m pytest --ds tests.oscar_shop.settings tests/oscar_shop

# The support matrix (docs/support.md): the core suite on each supported Django and on the
# declared floors, each cell in a virtualenv of its own under .nox/. NOX_ARGS picks cells,
# e.g. NOX_ARGS='-s lowest'.
matrix: $(STAMP)
	$(BIN)/nox $(NOX_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

sandbox: $(STAMP)
	$(BIN)/python -m tiktok_tracking.sandbox --port 8765

demo: $(STAMP)
	$(BIN)/python -m demo_shop.run

BENCH_ADMIN_ROWS ?= 1000000

BENCH_POSTGRES ?= postgres://postgres@127.0.0.1:5432

bench: $(STAMP)
	$(BIN)/python -m bench.tags
	$(BIN)/python -m bench.checkout
	$(BIN)/python -m bench.checkout --database-url $(BENCH_POSTGRES)/tiktok_bench_checkout
	$(BIN)/python -m bench.delivery --database-url $(BENCH_POSTGRES)/tiktok_bench_delivery
	$(BIN)/python -m bench.latency --database-url $(BENCH_POSTGRES)/tiktok_bench_latency
	$(BIN)/python -m bench.admin_scale --rows $(BENCH_ADMIN_ROWS) \
		--database-url $(BENCH_POSTGRES)/tiktok_bench

# Workers 5 and 20 ms from PostgreSQL and Redis, beside loopback: BENCHMARKS.md's table.
bench-distance: $(STAMP)
	$(BIN)/python -m bench.distance --database-url $(BENCH_POSTGRES)/tiktok_bench_distance \
		--write BENCHMARKS.md

# Not part of bench: about 11 minutes, 100 orders/s through two servers taking turns.
soak: $(STAMP)
	$(BIN)/python -m bench.soak --database-url $(BENCH_POSTGRES)/tiktok_bench_soak

# Needs PyPI's vulnerability data (pypi.org or osv.dev); --strict fails rather than pass over
# packages it could not audit.
PIP_AUDIT_VERSION ?= 2.10.1

AUDIT_VENV ?= .venv-audit

# A virtualenv of its own, so that the auditor's dependencies never mix with the project's.
audit:
	@test -x $(AUDIT_VENV)/bin/python || $(PYTHON) -m venv $(AUDIT_VENV)
	$(AUDIT_VENV)/bin/python -m pip install --quiet pip-audit==$(PIP_AUDIT_VERSION)
	$(AUDIT_VENV)/bin/pip-audit --strict --no-deps --disable-pip -r requirements.txt

# The release archives, checked as PyPI checks them (docs/releasing.md).
dist: $(STAMP)
	rm -rf dist
	$(BIN)/python -m build --outdir dist .
	$(BIN)/twine check --strict dist/*

clean:
	rm -rf $(VENV) $(AUDIT_VENV) .nox .pytest_cache .ruff_cache .hypothesis
