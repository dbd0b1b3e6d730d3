# Two commands do everything (see README): `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin

.PHONY: install demo test lint bench fuzz clean hapi

# The HAPI FHIR JPA test server (hapi/), built from Maven Central; offline once ~/.m2 has it.
HAPI_JAR := hapi/target/fhir-cyclo-hapi.jar
HAPI_SOURCES := hapi/pom.xml $(shell find hapi/src -type f 2>/dev/null)
MVN_FLAGS := -B -q -Denforcer.skip=true -DskipTests

$(HAPI_JAR): $(HAPI_SOURCES)
	@command -v java >/dev/null || { echo "make hapi: Java not found: install a JDK 17+ (Debian: apt-get install openjdk-17-jdk-headless)" >&2; exit 1; }
	@command -v mvn >/dev/null || { echo "make hapi: Maven not found: install Maven 3.8+ (Debian: apt-get install maven)" >&2; exit 1; }
	mvn $(MVN_FLAGS) -f hapi/pom.xml package || { echo "make hapi: the Maven build failed (see above; the first build needs Maven Central)" >&2; exit 1; }

hapi: $(HAPI_JAR)

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

install: $(VENV)/.installed

# Main job on the bundled fixtures, no server needed: export Bundles + NDJSON, then score them
# (table on stdout, out/scores.json, out/plots/, and the HTML report out/report.html).
demo: install
	$(BIN)/fhir-cyclo export fixtures --out out/bundles --ndjson
	$(BIN)/fhir-cyclo score out/bundles --table --json out/scores.json --plot out/plots \
		--report out/report.html

# Whole test suite: unit, contract (recorded HAPI responses), faults and integration on the HAPI
# test server (started by the tests themselves; built here first).
test: install $(HAPI_JAR)
	$(PY) -m pytest -q --durations=15

lint: install
	$(BIN)/ruff check src tools tests bench fixtures fuzz
	$(BIN)/ruff format --check src tools tests bench fixtures fuzz
	$(BIN)/mypy

bench: install $(HAPI_JAR)
	$(PY) bench/run.py

# Long fuzz run: every reader's atheris harness for FUZZ_SECONDS each (seeds from fixtures and
# tests/bad_input); crashes land in out/fuzz/crashes/, statistics in out/fuzz/<target>.log.
FUZZ_SECONDS ?= 300
FUZZ_TARGETS := case_file cohort_folder fhir_json ndjson manifest
fuzz: $(VENV)/.installed
	rm -rf out/fuzz && mkdir -p out/fuzz/crashes
	$(PY) fuzz/seed.py out/fuzz/corpus
	@for t in $(FUZZ_TARGETS); do \
	  $(PY) fuzz/run.py $$t -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 \
	    -artifact_prefix=out/fuzz/crashes/$$t- out/fuzz/corpus/$$t > out/fuzz/$$t.log 2>&1; \
	  echo "$$t: exit $$? $$(grep -E 'stat::number_of_executed_units' out/fuzz/$$t.log)"; \
	done
	@ls out/fuzz/crashes; test -z "$$(ls out/fuzz/crashes)"

clean:
	rm -rf out .pytest_cache .mypy_cache .ruff_cache
