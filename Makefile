# One command each: `make demo` runs the live demo, `make test` sets up and runs the tests.
# Both create .venv on first use (Python >= 3.11) and reinstall when pyproject.toml changes.
# `make demo` installs only what the demo needs; the dev tools (ruff, mypy, pytest, ...) come with `make test`.
# Every install is pinned by requirements.lock (as a pip constraint, also inside the build environment),
# so a fresh clone resolves the same versions every time; `make lock` refreshes it.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
LOCK := requirements.lock
PIP := PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_CONSTRAINT=$(abspath $(LOCK)) $(BIN)/python -m pip install -q
LOCK_EXTRAS := dev,demo
# Test workers (pytest-xdist): the suite spends much of its time waiting on servers it started, so
# 3 workers on this 2-core machine finish sooner than 2 (5:53 against 7:09 measured); TEST_WORKERS=0 runs it
# in one process.
TEST_WORKERS ?= 3

.PHONY: test demo lint bench clean lock

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed-demo: pyproject.toml $(LOCK) | $(BIN)/python
	$(PIP) -e ".[demo]"
	touch $@

$(VENV)/.installed-dev: pyproject.toml $(LOCK) | $(BIN)/python
	$(PIP) -e ".[dev,demo]"
	touch $@ $(VENV)/.installed-demo

test: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist worksteal

demo: $(VENV)/.installed-demo
	$(BIN)/promptreg demo

lint: $(VENV)/.installed-dev  # the checks of `make test`, without the tests
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: $(VENV)/.installed-dev  # every benchmark, full size (docs/performance.md has each one's figures)
	$(BIN)/python -m benchmarks.lookup
	$(BIN)/python -m benchmarks.render
	$(BIN)/python -m benchmarks.startup
	$(BIN)/python -m benchmarks.apply
	$(BIN)/python -m benchmarks.propagation --backend both
	$(BIN)/python -m benchmarks.propagation --topology replicas
	$(BIN)/python -m benchmarks.propagation --topology cluster
	$(BIN)/python -m benchmarks.composition
	$(BIN)/python -m benchmarks.writes --backend both
	$(BIN)/python -m benchmarks.fleet
	$(BIN)/python -m benchmarks.failover
	$(BIN)/python -m benchmarks.serve

lock:  # the newest releases pyproject.toml allows, resolved in a throwaway venv; review the diff, then make test
	rm -rf .lock-venv
	$(PYTHON) -m venv .lock-venv
	PIP_DISABLE_PIP_VERSION_CHECK=1 .lock-venv/bin/python -m pip install -q "setuptools>=77" -e ".[$(LOCK_EXTRAS)]"
	{ echo "# Pinned by 'make lock' from pyproject.toml's [$(LOCK_EXTRAS)] extras; used as a pip constraint by make and .ci/run."; \
	  .lock-venv/bin/python -m pip freeze --all --exclude-editable | grep -v -e '^pip==' -e '^#' | LC_ALL=C sort -f; } > $(LOCK)
	rm -rf .lock-venv

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
