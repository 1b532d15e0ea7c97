# The two entry points of the README: `make demo` and `make test`. Both set up from nothing.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
export DAGSTER_HOME ?= $(CURDIR)/var/dagster_home
export CALLTEXTS_HOME ?= $(CURDIR)/var

.PHONY: install lock demo dev test lint bench stack stack-down stack-smoke clean

install: $(VENV)/.installed

# Exactly the versions of requirements.lock (hashes checked), then the project itself: a fresh
# clone runs what the tests passed with. `make lock` updates the lock (a deliberate commit).
$(VENV)/.installed: pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --require-hashes -r requirements.lock
	$(BIN)/pip install -q --no-deps --no-build-isolation -e .
	touch $@

# pip-tools in a venv of its own; keeps every pin it can, adds what pyproject.toml added.
lock:
	$(PYTHON) -m venv $(VENV)-lock
	$(VENV)-lock/bin/pip install -q pip-tools
	$(VENV)-lock/bin/pip-compile -q --extra dev --all-build-deps --generate-hashes --allow-unsafe --no-strip-extras \
		--no-emit-index-url --no-emit-find-links -o requirements.lock pyproject.toml

$(DAGSTER_HOME)/dagster.yaml: dagster.yaml
	mkdir -p $(DAGSTER_HOME)
	cp dagster.yaml $@

# Materializes the last 3 days on the embedded default: SQLite Dagster instance, local
# storage under var/, and the sandbox portal + STT server when no credentials are set.
demo: install $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/calltexts run --days 3

# Dagster UI + daemon (and the sandbox when no credentials are set).
dev: install $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/calltexts dev $(ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# 4 workers on 2 cores: the suite mostly waits on loopback servers and child processes
# (16 min alone, 8 min of CPU; 7.7 min with 4 workers under load 5).
test: install
	$(BIN)/ruff check .
	$(BIN)/pytest -n 4 --dist worksteal

bench: install
	$(BIN)/python benchmarks/full_period.py

# The production stack on this Docker host (deploy/docker; fill deploy/docker/.env and the
# secret files first, README: The Docker stack). BASE_IMAGE=local where no registry is
# reachable; EXTRA_CA=<pem> behind an HTTPS-intercepting proxy.
stack:
	deploy/docker/stack.sh up

# Stops the stack and removes its containers (run containers left behind too); the volumes
# stay: `deploy/docker/stack.sh purge` removes them as well.
stack-down:
	deploy/docker/stack.sh down

# The stack started for real with the sandbox as a service: a 4-day backfill of 1-day runs
# against an embedded export, a killed run container, everything torn down but the images.
stack-smoke: install
	$(BIN)/python .ci/stack_smoke.py

clean:
	rm -rf var .pytest_cache
