# The two commands a fresh machine needs: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install run test test-fast lint hash-timing bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

## Install everything and serve on http://localhost:8000 with zero configuration.
run: $(STAMP)
	$(BIN)/cloudmfa serve --host 127.0.0.1 --port 8000

## The whole suite: unit, API (SQLite + PostgreSQL, memory + Redis), CLI, property tests.
test: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy
	$(BIN)/pytest -n 2 --dist loadfile -q

## Everything but the subprocess and property-based tests.
test-fast: $(STAMP)
	$(BIN)/pytest -n 2 --dist loadfile -q -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy

## One argon2id hash with the configured parameters, timed on this machine.
hash-timing: $(STAMP)
	$(BIN)/python -m timeit -n 20 -r 5 -s 'from cloudmfa.config import Settings; from cloudmfa.security.passwords import PasswordHashing; s = Settings(); h = PasswordHashing(time_cost=s.argon2_time_cost, memory_kib=s.argon2_memory_kib, parallelism=s.argon2_parallelism)' 'h.hash_sync("plum-orbit-velvet-canyon-42")'

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache

## Load benchmark: starts the service itself (2 workers; SQLite and PostgreSQL, with Redis),
## writes bench/results/<time>.{json,md}. See bench/README.md.
bench: $(STAMP)
	$(BIN)/python bench/run.py
