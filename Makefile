# Everything runs from a project-local virtualenv, created on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: bootstrap demo serve test test-mssql lint typecheck clean

bootstrap: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/backupflow demo

serve: $(STAMP)
	mkdir -p .prefect
	deployments/serve.sh

test: $(STAMP)
	$(BIN)/ruff check src flows tasks deployments tests
	$(BIN)/mypy
	$(BIN)/python -m pytest

# The live SQL Server suite: needs BACKUPFLOW_TEST_MSSQL_DSN and the BACKUPFLOW_DATABASE__*
# settings of a reachable server (docker/compose.test.yaml starts one where Docker runs).
test-mssql: $(STAMP)
	$(BIN)/python -m pytest -m mssql tests/live

lint: $(STAMP)
	$(BIN)/ruff check src flows tasks deployments tests
	$(BIN)/ruff format --check src flows tasks deployments tests

typecheck: $(STAMP)
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .prefect
