# statestore: `make run` runs Dapr Workflows that use statestore, `make test` runs the
# tests. Both set up what is missing first (Python venv, Redis, and daprd, the Dapr CLI,
# placement and scheduler built from Go modules).
SHELL := /bin/bash
PY := .venv/bin/python
DAPR := .runtime/bin/dapr

.PHONY: setup run test test-unit chaos bench bench-full up down status clean

setup:
	@scripts/setup.sh all

run: setup
	@$(PY) -m devstack run

test: setup
	$(PY) -m pytest -ra $(PYTEST_ARGS)

# The fault matrix in full: 20 subscriber SIGKILLs, every other fault 3 times.
chaos: setup
	@mkdir -p local
	CHAOS_KILLS=20 CHAOS_ROUNDS=3 RELIABILITY_JSON=local/reliability.json \
		$(PY) -m pytest -ra tests/integration/test_faults.py tests/integration/test_poison.py

# Benchmarks: statestore vs plain Dapr state vs the reference design (docs/benchmarks.md).
bench: setup
	@$(PY) -m pip install --quiet --disable-pip-version-check -e '.[bench]'
	$(PY) -m bench

bench-full: setup
	@$(PY) -m pip install --quiet --disable-pip-version-check -e '.[bench]'
	$(PY) -m bench --full

test-unit: setup
	$(PY) -m pytest -ra tests/unit

up: setup
	@$(PY) -m devstack up

down:
	@if [ -x $(PY) ]; then $(PY) -m devstack down; else echo "nothing was running"; fi

status:
	@$(PY) -m devstack status

clean: down
	rm -rf local .runtime/build .runtime/build-engine
