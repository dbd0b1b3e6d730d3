# Two commands do everything (see README): `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin

.PHONY: install demo test lint bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

# The sandbox FHIR server (Node, Medplum fhir-router) pinned by its lock file.
sandbox/node_modules/.installed: sandbox/package.json sandbox/package-lock.json
	npm ci --prefix sandbox --no-audit --no-fund --loglevel=error
	touch $@

install: $(VENV)/.installed sandbox/node_modules/.installed

# Main job on the bundled fixtures, no server needed: export Bundles + NDJSON, then score them.
demo: install
	$(BIN)/fhir-cyclo export fixtures --out out/bundles --ndjson
	$(BIN)/fhir-cyclo score out/bundles --table --json out/scores.json --plot out/plots

# Whole test suite: unit, contract (recorded HAPI responses) and integration (sandbox server).
test: install
	$(PY) -m pytest -q

lint: install
	$(BIN)/ruff check src tests bench fixtures
	$(BIN)/ruff format --check src tests bench fixtures
	$(BIN)/mypy

bench: install
	$(PY) bench/run.py

clean:
	rm -rf out .pytest_cache .mypy_cache .ruff_cache
