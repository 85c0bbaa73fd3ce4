# statestore: `make run` runs Dapr Workflows that use statestore, `make test` runs the
# tests. Both set up what is missing first (Python venv, Redis, and daprd, the Dapr CLI,
# placement and scheduler built from Go modules, the scale profile's Kafka, PostgreSQL
# and S3Proxy).
# PROFILE=scale (make up, chaos, bench) picks Kafka + PostgreSQL + S3 with 3 subscriber replicas.
# `make run ENGINE=temporal` runs the Temporal example instead (TEMPORAL_WORKFLOWS=50);
# `make up TEMPORAL=1` adds a Temporal dev server. Both build the Temporal CLI when missing.
SHELL := /bin/bash
PY := .venv/bin/python
DAPR := .runtime/bin/dapr
PROFILE ?= local

.PHONY: setup run test test-compat test-unit chaos bench bench-full up down status clean

setup:
	@scripts/setup.sh all

run: setup
	@if [ "$(ENGINE)" = temporal ]; then scripts/setup.sh temporal; fi
	@$(PY) -m statestore.devstack run $(if $(ENGINE),--engine $(ENGINE))

# The Temporal integration test needs the Temporal CLI (built once, then skipped), so
# setup builds it too, beside the rest.
# Every test on the local profile, then the integration suite on the scale profile.
test:
	@scripts/setup.sh all temporal
	$(PY) -m pytest -ra $(PYTEST_ARGS)
	$(PY) -m pytest -ra --profile scale tests/integration $(PYTEST_ARGS)

# The built wheel in fresh venvs beside the lowest and the highest dapr of the tested range,
# on Python 3.11 and the newest CPython found, each against a stack of its own
# (docs/compatibility.md). Not part of `make test`: .ci/run runs it after.
test-compat: setup
	$(PY) -m tests.compat $(COMPAT_ARGS)

# The fault matrix in full: 20 subscriber SIGKILLs, every other fault 3 times, the long
# outages (caller sidecar 45 s, Redis 30 s), SIGTERM with a backlog and fork, and the
# faults marked chaos (scale: a replica's app SIGSTOPped 60 s, a dead replica rejoining).
chaos: setup
	@mkdir -p local
	CHAOS_KILLS=20 CHAOS_ROUNDS=3 OUTAGE_LONG=1 RELIABILITY_JSON=local/reliability-$(PROFILE).json \
		$(PY) -m pytest -ra --chaos --profile $(PROFILE) tests/integration/test_faults.py tests/integration/test_poison.py \
		tests/integration/test_outages.py tests/integration/test_lifecycle.py tests/integration/test_faults_scale.py

# Benchmarks: statestore vs plain Dapr state vs the reference design (docs/benchmarks.md).
bench: setup
	@$(PY) -m pip install --quiet --disable-pip-version-check -e '.[bench]'
	@if [ "$(PROFILE)" = local ]; then scripts/setup.sh temporal; fi
	$(PY) -m bench --profile $(PROFILE)
	$(PY) -m bench.floors --profile $(PROFILE)
	@if [ "$(PROFILE)" = local ]; then $(PY) -m bench.temporal; fi

bench-full: setup
	@$(PY) -m pip install --quiet --disable-pip-version-check -e '.[bench]'
	@if [ "$(PROFILE)" = local ]; then scripts/setup.sh temporal; fi
	$(PY) -m bench --full --profile $(PROFILE)
	$(PY) -m bench.floors --profile $(PROFILE)
	@if [ "$(PROFILE)" = local ]; then $(PY) -m bench.temporal; fi

test-unit: setup
	$(PY) -m pytest -ra tests/unit

up: setup
	@if [ -n "$(TEMPORAL)" ]; then scripts/setup.sh temporal; fi
	@$(PY) -m statestore.devstack up --profile $(PROFILE) $(if $(TEMPORAL),--temporal)

down:
	@if [ -x $(PY) ]; then $(PY) -m statestore.devstack down; else echo "nothing was running"; fi

status:
	@$(PY) -m statestore.devstack status

clean: down
	rm -rf local .runtime/build .runtime/logs
