# One command each: `make demo` runs the live demo, `make test` sets up and runs the tests.
# Both create .venv on first use (Python >= 3.11) and reinstall when pyproject.toml changes.
# `make demo` installs only what the demo needs; the dev tools (ruff, mypy, pytest, ...) come with `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := PIP_DISABLE_PIP_VERSION_CHECK=1 $(BIN)/python -m pip install -q

.PHONY: test demo lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed-demo: pyproject.toml | $(BIN)/python
	$(PIP) -e ".[demo]"
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(PIP) -e ".[dev,demo]"
	touch $@ $(VENV)/.installed-demo

test: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/python -m pytest

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
	$(BIN)/python -m benchmarks.writes --backend both
	$(BIN)/python -m benchmarks.fleet
	$(BIN)/python -m benchmarks.failover

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
