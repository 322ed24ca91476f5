# The verbs a newcomer types. Each one installs what it needs into .venv on first use.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SPARK_STAMP := $(VENV)/.installed-spark
MANIFEST := dbt_project/target/manifest.json
DBT_SOURCES := $(shell find dbt_project -name '*.sql' -o -name '*.yml' | grep -v '/target/')

export DBT_SEND_ANONYMOUS_USAGE_STATS := false
export DO_NOT_TRACK := 1
export AIRFLOW__COSMOS__ENABLE_TELEMETRY := False
export SCARF_ANALYTICS := false

.PHONY: install install-spark java demo demo-spark demo-ui demo-ui-stop monitoring-ui monitoring-ui-stop demo-server test test-server browser airflow airflow-celery airflow-status airflow-stop bench bench-gpu clean help

help:
	@echo "make demo   - install (first time) and run the end-to-end demo on the embedded defaults"
	@echo "make test   - install (first time) and run the test suite"
	@echo "make demo-ui - open the Airflow UI on the last demo's own runs (grid, logs, asset events); make demo-ui-stop ends it"
	@echo "make monitoring-ui - open Evidently's UI on the last demo's monitoring: each model's days of drift and realized performance; make monitoring-ui-stop ends it"
	@echo "make demo-server - the same demo on PostgreSQL (database tidemark_demo) and a registry on a local S3 API (moto)"
	@echo "make demo-spark  - the same demo with Spark as the warehouse (installs pyspark, dbt-spark and Java 17 first)"
	@echo "make install-spark - add Spark to the venv (requirements-spark.txt) and make sure Java 17+ is there"
	@echo "make bench  - run the benchmarks under bench/"
	@echo "make bench-gpu - train the PyTorch candidate on CUDA (bf16) and on the CPU; says so and stops without CUDA"
	@echo "make airflow        - start Airflow (api-server, scheduler, dag-processor, triggerer) on the embedded defaults"
	@echo "make airflow-celery - the same with the CeleryExecutor on Redis, metadata on PostgreSQL, a gpu-queue worker"
	@echo "make airflow-stop   - stop what make airflow / airflow-celery started"
	@echo "make test-server    - the server tests: Celery, REST API, approvals (required actions), browser, monitoring UI, PostgreSQL+S3 demo, Terraform"

$(STAMP): requirements.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $(STAMP)

$(MANIFEST): $(STAMP) $(DBT_SOURCES)
	$(PY) -m ml dbt parse --quiet

install: $(STAMP) $(MANIFEST)

$(SPARK_STAMP): $(STAMP) requirements-spark.txt
	$(PY) -m pip install --quiet -r requirements-spark.txt
	touch $(SPARK_STAMP)

# Spark runs on Java 17 or newer: JAVA_HOME's java (as Spark's scripts pick it), else the one on PATH,
# else Debian's openjdk-17-jre-headless when root can install it; otherwise it says what to install.
java:
	@if [ -n "$$JAVA_HOME" ]; then java="$$JAVA_HOME/bin/java"; else java="$$(command -v java)"; fi; \
	version="$$([ -x "$$java" ] && "$$java" -version 2>&1 | sed -n 's/.* version "\([0-9._]*\).*/\1/p' | head -n 1)"; \
	major="$${version%%.*}"; if [ "$${major:-0}" -ge 17 ]; then exit 0; fi; \
	found="$${java:-no java on PATH}$${version:+ (Java $$version)}"; \
	if [ -z "$$JAVA_HOME" ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "Spark needs Java 17 or newer (found: $$found): installing Debian's openjdk-17-jre-headless"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openjdk-17-jre-headless >/dev/null; \
	else \
	  echo "Spark needs Java 17 or newer (found: $$found): install one, e.g." \
	       "sudo apt-get install openjdk-17-jre-headless, or point JAVA_HOME at a JDK 17+" >&2; \
	  exit 1; \
	fi

install-spark: install $(SPARK_STAMP) java

demo: install
	$(PY) -m ml demo

demo-ui: install
	$(PY) -m ml airflow start --demo

demo-ui-stop:
	$(PY) -m ml airflow stop --demo

monitoring-ui: install
	$(PY) -m ml monitoring-ui --demo

monitoring-ui-stop:
	$(PY) -m ml monitoring-ui --demo --stop

demo-server: install
	$(PY) -m ml demo --server

demo-spark: install-spark
	$(PY) -m ml demo --spark

test: install
	$(PY) -m pytest tests --ignore=tests/server -n auto --maxprocesses 4 --dist loadfile

# Debian's Chromium for the browser test (root installs it; others are told how).
browser:
	@command -v chromium >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian's chromium for the browser test"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "no chromium: install it (sudo apt-get install chromium) or the browser test is skipped"; fi; }

# The server tests in two pytest processes at once. The modules that start Airflow's services (their
# schedulers keep to deadlines), with Terraform and the monitoring UI, run one after another as before; the
# Spark modules and the server demo, which start no scheduler, run beside them at a lower CPU priority and
# with a dbt target folder of their own. Their output follows the first process's; either failing fails.
SERVER_BESIDE := tests/server/test_spark_cluster.py tests/server/test_spark_features.py \
  tests/server/test_spark_scoring.py tests/server/test_spark_stages.py tests/server/test_demo_server.py

test-server: install-spark browser
	@beside=$$(mktemp -d); \
	DBT_TARGET_PATH=$$beside/dbt-target nice -n 10 $(PY) -m pytest $(SERVER_BESIDE) >$$beside/log 2>&1 & pid=$$!; \
	$(PY) -m pytest tests/server $(addprefix --ignore=,$(SERVER_BESIDE)); services=$$?; \
	wait $$pid; rc=$$?; \
	echo "=== beside them, at nice 10: the Spark modules and the server demo ==="; cat $$beside/log; \
	rm -rf $$beside; [ $$services -eq 0 ] && [ $$rc -eq 0 ]

airflow: install
	$(PY) -m ml airflow start

airflow-celery: install
	$(PY) -m ml airflow start --profile celery

airflow-status:
	$(PY) -m ml airflow status

airflow-stop:
	$(PY) -m ml airflow stop

bench: install
	$(PY) bench/bench_simulate.py
	$(PY) bench/bench_features.py --customers 125000 --duckdb-memory-limit 14GB
	$(PY) bench/bench_scoring.py
	$(PY) bench/bench_drift.py
	$(PY) bench/bench_dag_parse.py

bench-gpu: install
	$(PY) bench/bench_gpu.py

clean:
	rm -rf var dbt_project/target dbt_project/logs
