# One command per job. `make test` and `make serve` work on a fresh clone:
# they create .venv first (Python 3.11+), then use only what is inside it.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := test

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# CrossHair budget: CPU seconds per contract condition, and how many iterations without new
# coverage end the search of one condition early. Modules run in parallel (CROSSHAIR_JOBS).
CROSSHAIR_TIMEOUT ?= 3
CROSSHAIR_ITERATIONS ?= 10

.PHONY: install test verify serve bench fmt clean

install: $(STAMP)

# Re-runs only when pyproject.toml changes (or .venv is gone). An existing .venv is
# reused, so its interpreter is checked too.
$(STAMP): pyproject.toml
	@if [ ! -x $(BIN)/python ]; then \
		$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
			|| { echo "error: MultiMail needs Python 3.11+, but '$(PYTHON)' is" \
			          "'$$($(PYTHON) -V 2>&1)'; try 'make PYTHON=python3.11 install'." >&2; exit 1; }; \
		echo "$(PYTHON) -m venv $(VENV)"; \
		$(PYTHON) -m venv $(VENV) \
			|| { rm -rf $(VENV); echo "error: '$(PYTHON) -m venv' failed; on Debian/Ubuntu install python3-venv." >&2; exit 1; }; \
	fi
	@$(BIN)/python -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
		|| { echo "error: $(VENV) runs $$($(BIN)/python -V 2>&1); MultiMail needs 3.11+." \
		          "Remove $(VENV) and run 'make install' again." >&2; exit 1; }
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@

test: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/pytest -n 2 tests
	$(MAKE) verify

# CrossHair over every contract in the core, module by module in parallel. Fails on a
# non-zero exit *or* on any output, so a reported counterexample never passes silently.
verify: install
	CROSSHAIR_TIMEOUT=$(CROSSHAIR_TIMEOUT) CROSSHAIR_ITERATIONS=$(CROSSHAIR_ITERATIONS) \
		$(BIN)/python tests/verify/run_crosshair.py

# One process: HTTP API and workers on SQLite under ./var; prints the URL and admin key.
serve: install
	exec $(BIN)/multimail serve

bench: install
	@if [ -f bench/run.py ]; then \
		exec $(BIN)/python bench/run.py; \
	else \
		echo "No benchmarks exist yet (bench/run.py is missing)."; \
	fi

fmt: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf .pytest_cache .mypy_cache .ruff_cache .hypothesis build dist
	find . -path ./$(VENV) -prune -o -path ./.git -prune -o \
		\( -name __pycache__ -o -name '*.egg-info' \) -type d -prune -exec rm -rf {} +
