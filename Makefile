# crmctl — two commands on a fresh machine:
#   make demo   set up a virtualenv, install, run the demo on SQLite
#   make test   set up, install the test dependencies, run lint and the whole suite (SQLite + PostgreSQL)

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
DEMO_DB ?= sqlite:///demo.db
DEMO_PEOPLE ?= 2000
PYTEST_ARGS ?=

.PHONY: install demo test lint format bench pg-up clean migration

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

demo: install
	rm -f demo.db demo.db-wal demo.db-shm
	$(BIN)/crmctl --db $(DEMO_DB) demo --people $(DEMO_PEOPLE) --out demo-data

pg-up:
	@bash scripts/ensure-postgres

lint: install
	$(BIN)/ruff check crmctl tests benchmarks scripts
	$(BIN)/ruff format --check crmctl tests benchmarks scripts

test: install pg-up lint
	$(BIN)/python -m pytest -n 2 -q $(PYTEST_ARGS)

format: install
	$(BIN)/ruff format crmctl tests benchmarks scripts
	$(BIN)/ruff check --fix crmctl tests benchmarks scripts

bench: install pg-up
	$(BIN)/python -m benchmarks

# Pre-release only: rewrite migration 0001 from the models (see scripts/regen_initial_migration.py).
migration: install
	$(BIN)/python scripts/regen_initial_migration.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis demo.db* demo-data bench-data
