# The two commands a fresh machine needs: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PORT   ?= 8000
# What running needs, and what developing needs besides (the test extras: pytest, mypy, …);
# each stamp is renewed when pyproject.toml changes.
RUN_STAMP  := $(VENV)/.installed-run
TEST_STAMP := $(VENV)/.installed-test

.PHONY: install run test test-fast lint hash-timing bench bench-scale clean web web-test wheel

# The web UI (web/): npm packages from the lockfile, then a build into the package, which serves
# it at `/`. Rebuilt when its sources, its lockfile or the API (its types come from the app's
# OpenAPI document) change.
WEB_DIST    := src/cloudmfa/web_dist/index.html
NPM_STAMP   := web/node_modules/.installed
WEB_SOURCES := $(shell find web/src web/public -type f ! -name schema.d.ts 2>/dev/null) \
               web/index.html web/vite.config.ts web/tsconfig.json web/scripts/dump_openapi.py \
               $(wildcard src/cloudmfa/api/*.py)

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

# The service as `make run` and the container install it, without the test extras: what
# `make bench` starts and measures. The extras change a worker: structlog imports `rich` whenever
# it is installed (schemathesis brings it), 4.4 MiB in every process (bench/README.md).
SERVE_VENV  := .venv-serve
SERVE_STAMP := $(SERVE_VENV)/.installed-run

$(SERVE_STAMP): pyproject.toml
	$(PYTHON) -m venv $(SERVE_VENV)
	$(SERVE_VENV)/bin/pip install --quiet --upgrade pip
	$(SERVE_VENV)/bin/pip install --quiet -e .
	touch $(SERVE_STAMP)

$(NPM_STAMP): web/package.json web/package-lock.json
	cd web && npm ci --no-audit --no-fund --loglevel=error
	touch $(NPM_STAMP)

$(WEB_DIST): $(WEB_SOURCES) $(NPM_STAMP) | $(RUN_STAMP)
	$(BIN)/python web/scripts/dump_openapi.py web/openapi.json
	cd web && npm run -s gen && npm run -s build

## Build the web UI into src/cloudmfa/web_dist/ (when missing or stale).
web: $(WEB_DIST)

## The UI's component tests (Vitest).
web-test: $(WEB_DIST)
	cd web && npm test

## A wheel in dist/, with the built UI inside.
wheel: $(WEB_DIST)
	$(BIN)/pip wheel --quiet --no-deps --wheel-dir dist .

## Everything, for development.
install: $(TEST_STAMP)

## Install what running needs and serve on http://localhost:$(PORT) with zero configuration
## (`make run PORT=8080` for another port).
run: $(RUN_STAMP) $(WEB_DIST)
	$(BIN)/cloudmfa serve --host 127.0.0.1 --port $(PORT)

## The whole suite: unit, API (SQLite + memory, PostgreSQL + Redis, MariaDB + Redis), CLI,
## property tests, the UI's component tests and its end-to-end tests in Chromium.
test: $(TEST_STAMP) $(WEB_DIST)
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy
	cd web && npm test
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
	rm -rf $(VENV) $(SERVE_VENV) var .pytest_cache .ruff_cache web/node_modules src/cloudmfa/web_dist artifacts dist

## Load benchmark: starts the service itself (2 workers; SQLite and PostgreSQL, with Redis),
## writes bench/results/<time>.{json,md}. See bench/README.md.
bench: $(TEST_STAMP) $(SERVE_STAMP)
	$(BIN)/python bench/run.py --serve $(SERVE_VENV)/bin/cloudmfa

## A million users: 1,000,000 users and 10,000,000 audit events COPYed into PostgreSQL, the
## sign-in steps and the admin reads measured against the same at 1,000 users (bench/README.md).
## Smaller: `make bench-scale SCALE_USERS=100000` (10 audit events per user); any other option
## of bench/scale.py in SCALE_ARGS.
SCALE_USERS ?=
bench-scale: $(TEST_STAMP)
	$(BIN)/python bench/scale.py $(if $(SCALE_USERS),--users $(SCALE_USERS)) $(SCALE_ARGS)
