# Everything runs from a project-local virtualenv, created on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Every host installs the same versions: requirements.lock pins the runtime dependencies and
# the dev extra of pyproject.toml, each with its hashes (CPython 3.11, Linux x86_64). Edit
# pyproject.toml, run `make lock`, commit both. The lock tool is needed only to regenerate it.
LOCK   := requirements.lock

.PHONY: bootstrap lock tools pg-tools awscli bench demo serve test test-mssql lint typecheck clean

bootstrap: $(STAMP) tools

# Debian's age CLI and the other tools of the break-glass restore (docs/security.md, "Keys and
# encryption"), which tests/integration/test_break_glass.py runs. Idempotent; CI runs as root,
# elsewhere sudo asks. If they cannot be installed, that test is skipped locally and fails
# under CI (CI=true).
APT_INSTALL := apt-get install -y --no-install-recommends
BREAK_GLASS_TOOLS := age zstd jq openssl xxd sqlite3 gzip
tools: pg-tools
	@command -v age >/dev/null || ($(APT_INSTALL) age || sudo $(APT_INSTALL) age) || \
	  echo "warning: could not install Debian's age; the break-glass test cannot run"
	@missing=; for t in $(BREAK_GLASS_TOOLS); do command -v $$t >/dev/null || missing="$$missing $$t"; done; \
	  test -z "$$missing" || $(APT_INSTALL) $$missing || sudo $(APT_INSTALL) $$missing || \
	  echo "warning: could not install$$missing; the break-glass test cannot run"

# The live PostgreSQL tests (tests/live/test_postgres_*.py) start throwaway clusters, which
# PostgreSQL refuses to run as root: they run as the "postgres" OS user, created here when
# missing (a system user without a login shell). The server's programs come from Debian's
# postgresql package when no PostgreSQL 15+ is installed, and pgBackRest (the bench's
# PostgreSQL rows measure it beside ours; tests/integration/test_bench.py runs them) from
# Debian's pgbackrest package: installed here, never downloaded while the bench runs.
pg-tools:
	@id postgres >/dev/null 2>&1 || { \
	  group=--user-group; getent group postgres >/dev/null && group="-g postgres"; \
	  add="useradd --system $$group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin postgres"; \
	  $$add 2>/dev/null || sudo $$add 2>/dev/null || \
	  echo "warning: could not create the postgres OS user; the PostgreSQL tests cannot run"; }
	@ls /usr/lib/postgresql/*/bin/pg_basebackup >/dev/null 2>&1 || \
	  ($(APT_INSTALL) postgresql || sudo $(APT_INSTALL) postgresql) || \
	  echo "warning: could not install PostgreSQL; the PostgreSQL tests cannot run"
	@command -v pgbackrest >/dev/null || \
	  ($(APT_INSTALL) pgbackrest || sudo $(APT_INSTALL) pgbackrest) || \
	  echo "warning: could not install Debian's pgbackrest; the bench's pgBackRest rows cannot run"

# pip's hash-checking mode refuses anything unpinned or unhashed; the project itself goes in
# editable (src/, flows/ and tasks/ import from the checkout) without resolving anything more.
$(STAMP): pyproject.toml $(LOCK)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --require-hashes -r $(LOCK)
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

# Regenerates $(LOCK) from pyproject.toml with uv (pinned here, in its own virtualenv), from
# PyPI. The pins already in $(LOCK) are kept unless pyproject.toml needs others; to move
# everything to the newest allowed: make lock LOCK_FLAGS=--upgrade (or
# LOCK_FLAGS='--upgrade-package prefect'). Then make bootstrap, make test, commit both files.
UV_VERSION := 0.13.8
LOCK_FLAGS ?=
lock:
	test -x .venv-lock/bin/uv || ($(PYTHON) -m venv .venv-lock && \
	  .venv-lock/bin/pip install --quiet uv==$(UV_VERSION))
	.venv-lock/bin/uv pip compile pyproject.toml --extra dev --generate-hashes \
	  --python-version 3.11 --python-platform x86_64-unknown-linux-gnu \
	  --custom-compile-command 'make lock' --quiet $(LOCK_FLAGS) -o $(LOCK)

demo: $(STAMP)
	$(BIN)/backupflow demo

# The benchmark: ~1 GiB and 4 GiB inputs under bench/out/, each local row interleaved five
# times with the standard-tool chain doing the same work (zstd | age | tee | sha256), about
# 6 minutes; the PostgreSQL rows at the end (when PostgreSQL 15+ and the postgres OS user are
# there), with pgBackRest beside ours on the same cluster (installed by pg-tools through
# tools), add about 10 more. It ends with the LIMIT line, then the PGBACKREST line. make test
# runs every scenario on small inputs (tests/integration/test_bench.py). The seed's way needs
# the AWS CLI. Then bench/fleet.py: a hundred sites on a real Prefect server (bootstrap,
# rerun, fleet health's requests, the hourly storm of fifty), ending with the FLEET line.
bench: $(STAMP) tools awscli
	BENCH_AWS=$$(command -v aws || echo $$PWD/.venv-awscli/bin/aws) $(BIN)/python bench/run.py
	$(BIN)/python bench/fleet.py

# The AWS CLI for the bench's "seed's way" rows, in its own virtualenv (it pins its own
# botocore) when the machine has none.
awscli:
	@command -v aws >/dev/null 2>&1 || test -x .venv-awscli/bin/aws || \
	  ($(PYTHON) -m venv .venv-awscli && .venv-awscli/bin/pip install --quiet awscli)

# The API behind basic auth: the string in .prefect/api-auth (made on the first run) unless
# PREFECT_API_AUTH_STRING is exported; deployments/serve.sh says how another shell uses it.
serve: $(STAMP)
	@deployments/serve.sh

# tests/integration/test_bench.py runs every bench scenario on small inputs (bench/run.py
# --quick), so it needs what make bench needs.
test: $(STAMP) tools awscli
	$(BIN)/ruff check src flows tasks deployments tests bench
	$(BIN)/mypy
	$(BIN)/python -m pytest

# The live SQL Server suite: needs BACKUPFLOW_TEST_MSSQL_DSN and the BACKUPFLOW_DATABASE__*
# settings of a reachable server (docker/compose.test.yaml starts one where Docker runs).
test-mssql: $(STAMP)
	$(BIN)/python -m pytest -m mssql tests/live

lint: $(STAMP)
	$(BIN)/ruff check src flows tasks deployments tests bench
	$(BIN)/ruff format --check src flows tasks deployments tests

typecheck: $(STAMP)
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .venv-lock .pytest_cache .mypy_cache .ruff_cache .prefect
