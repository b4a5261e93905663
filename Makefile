# One command per job. `make test` and `make serve` work on a fresh clone:
# they create .venv first (Python 3.11+), then use only what is inside it.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := test

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# CrossHair budget, in CPU seconds: per contract, and per execution path within it.
CROSSHAIR_TIMEOUT ?= 3
CROSSHAIR_PATH_TIMEOUT ?= 1

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

# CrossHair over every contract in the core. Fails on a non-zero exit *or* on any
# output, so that a reported counterexample can never pass silently.
verify: install
	@echo "CrossHair: checking multimail_core" \
		"($(CROSSHAIR_TIMEOUT)s per condition, $(CROSSHAIR_PATH_TIMEOUT)s per path)"
	@start=$$SECONDS; report=$$(mktemp); status=0; \
	$(BIN)/crosshair check --analysis_kind=icontract \
		--per_condition_timeout=$(CROSSHAIR_TIMEOUT) \
		--per_path_timeout=$(CROSSHAIR_PATH_TIMEOUT) \
		multimail_core | tee "$$report" || status=$$?; \
	echo "CrossHair took $$((SECONDS - start))s"; \
	if [ "$$status" -ne 0 ] || [ -s "$$report" ]; then \
		rm -f "$$report"; echo "CrossHair reported problems (exit $$status)" >&2; exit 1; \
	fi; \
	rm -f "$$report"

# The console script exists once the CLI does; until then say so and succeed.
serve: install
	@if [ -f adapters/multimail/cli.py ]; then \
		exec $(BIN)/multimail serve; \
	else \
		echo "The server arrives with the API issue (#3); nothing to serve yet."; \
	fi

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
