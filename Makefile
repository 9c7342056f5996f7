# One command each: `make demo` runs the live demo, `make test` sets up and runs the tests.
# Both create .venv on first use (Python >= 3.11) and reinstall when pyproject.toml changes.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: test demo lint bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev,demo]"
	touch $@

test: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

demo: $(VENV)/.installed
	$(BIN)/promptreg demo

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: $(VENV)/.installed
	$(BIN)/python -m benchmarks.lookup
	$(BIN)/python -m benchmarks.propagation
	$(BIN)/python -m benchmarks.writes

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
