# The two commands a fresh machine needs: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PORT   ?= 8000
# What running needs, and what developing needs besides (the test extras: pytest, mypy, …);
# each stamp is renewed when pyproject.toml changes.
RUN_STAMP  := $(VENV)/.installed-run
TEST_STAMP := $(VENV)/.installed-test

.PHONY: install run test test-fast lint hash-timing bench bench-scale clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(RUN_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $(RUN_STAMP)

# Everything running needs comes with the test extras, so this renews both stamps.
$(TEST_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(TEST_STAMP) $(RUN_STAMP)

## Everything, for development.
install: $(TEST_STAMP)

## Install what running needs and serve on http://localhost:$(PORT) with zero configuration
## (`make run PORT=8080` for another port).
run: $(RUN_STAMP)
	$(BIN)/cloudmfa serve --host 127.0.0.1 --port $(PORT)

## The whole suite: unit, API (SQLite + memory, PostgreSQL + Redis, MariaDB + Redis), CLI, property tests.
test: $(TEST_STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy
	$(BIN)/pytest -n 2 --dist loadfile -q

## Everything but the subprocess and property-based tests.
test-fast: $(TEST_STAMP)
	$(BIN)/pytest -n 2 --dist loadfile -q -m "not slow"

lint: $(TEST_STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy

## One argon2id hash with the configured parameters, timed on this machine.
hash-timing: $(RUN_STAMP)
	$(BIN)/python -m timeit -n 20 -r 5 -s 'from cloudmfa.config import Settings; from cloudmfa.security.passwords import PasswordHashing; s = Settings(); h = PasswordHashing(time_cost=s.argon2_time_cost, memory_kib=s.argon2_memory_kib, parallelism=s.argon2_parallelism)' 'h.hash_sync("plum-orbit-velvet-canyon-42")'

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache

## Load benchmark: starts the service itself (2 workers; SQLite and PostgreSQL, with Redis),
## writes bench/results/<time>.{json,md}. See bench/README.md.
bench: $(TEST_STAMP)
	$(BIN)/python bench/run.py

## A million users: 1,000,000 users and 10,000,000 audit events COPYed into PostgreSQL, the
## sign-in steps and the admin reads measured against the same at 1,000 users (bench/README.md).
## Smaller: `make bench-scale SCALE_ARGS="--users 100000 --audit-events 1000000"`.
bench-scale: $(TEST_STAMP)
	$(BIN)/python bench/scale.py $(SCALE_ARGS)
