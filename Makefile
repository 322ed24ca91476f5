# The verbs a newcomer types. Each one installs what it needs into .venv on first use.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
MANIFEST := dbt_project/target/manifest.json
DBT_SOURCES := $(shell find dbt_project -name '*.sql' -o -name '*.yml' | grep -v '/target/')

export DBT_SEND_ANONYMOUS_USAGE_STATS := false
export DO_NOT_TRACK := 1
export AIRFLOW__COSMOS__ENABLE_TELEMETRY := False
export SCARF_ANALYTICS := false

.PHONY: install demo test bench clean help

help:
	@echo "make demo   - install (first time) and run the end-to-end demo on the embedded defaults"
	@echo "make test   - install (first time) and run the test suite"
	@echo "make bench  - run the benchmarks under bench/"

$(STAMP): requirements.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $(STAMP)

$(MANIFEST): $(STAMP) $(DBT_SOURCES)
	$(PY) -m ml dbt parse --quiet

install: $(STAMP) $(MANIFEST)

demo: install
	$(PY) -m ml demo

test: install
	$(PY) -m pytest tests

bench: install
	$(PY) bench/bench_simulate.py
	$(PY) bench/bench_features.py --customers 125000 --duckdb-memory-limit 14GB
	$(PY) bench/bench_scoring.py
	$(PY) bench/bench_drift.py

clean:
	rm -rf var dbt_project/target dbt_project/logs
