# The two entry points of the README: `make demo` and `make test`. Both set up from nothing.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
export DAGSTER_HOME ?= $(CURDIR)/var/dagster_home
export CALLTEXTS_HOME ?= $(CURDIR)/var

.PHONY: install demo dev test lint bench stack clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

$(DAGSTER_HOME)/dagster.yaml: dagster.yaml
	mkdir -p $(DAGSTER_HOME)
	cp dagster.yaml $@

# Materializes the last 3 days on the embedded default: SQLite Dagster instance, local
# storage under var/, and the sandbox portal + STT server when no credentials are set.
demo: install $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/calltexts run --days 3

# Dagster UI + daemon (and the sandbox when no credentials are set).
dev: install $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/calltexts dev

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: install
	$(BIN)/ruff check .
	$(BIN)/pytest

bench: install
	$(BIN)/python benchmarks/full_period.py

# The production stack on this Docker host (deploy/docker; fill deploy/docker/.env first).
stack:
	docker compose -f deploy/docker/docker-compose.yml up -d --build

clean:
	rm -rf var .pytest_cache
