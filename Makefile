# hystate — `make help` lists the targets.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
DEMO_DIR ?= $(abspath ../hystate-demo)
# The orchestrators pin different packages: each has its own venv with hystate installed editable.
VENV_PREFECT ?= .venv-prefect
VENV_AIRFLOW ?= .venv-airflow

.DEFAULT_GOAL := help
.PHONY: help install install-orchestrators demo demo-cluster demo-prefect demo-airflow test \
	test-deps test-fast lint docs bench catalog clean

help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP) ## Create .venv and install hystate with its dev tools

$(VENV_PREFECT)/.installed-stamp: pyproject.toml
	$(PYTHON) -m venv $(VENV_PREFECT)
	$(VENV_PREFECT)/bin/pip install --quiet --upgrade pip
	$(VENV_PREFECT)/bin/pip install --quiet -e '.[prefect,orchestrator-tests]'
	touch $@

$(VENV_AIRFLOW)/.installed-stamp: pyproject.toml
	$(PYTHON) -m venv $(VENV_AIRFLOW)
	$(VENV_AIRFLOW)/bin/pip install --quiet --upgrade pip
	$(VENV_AIRFLOW)/bin/pip install --quiet -e '.[airflow,orchestrator-tests]'
	touch $@

install-orchestrators: $(VENV_PREFECT)/.installed-stamp $(VENV_AIRFLOW)/.installed-stamp ## .venv-prefect and .venv-airflow (~260 and ~300 MB)

demo: install ## The simulated migration of the real catalog, in a scratch repo (../hystate-demo)
	$(BIN)/python -m hystate.demo --dir "$(DEMO_DIR)" --catalog processed

demo-prefect: $(VENV_PREFECT)/.installed-stamp ## The same through a Prefect 3 flow (../hystate-demo-prefect)
	$(VENV_PREFECT)/bin/python -m hystate.demo_orchestrators prefect --dir "$(abspath ../hystate-demo-prefect)" --catalog processed

demo-airflow: $(VENV_AIRFLOW)/.installed-stamp ## The same through an Airflow 3 DAG (../hystate-demo-airflow)
	$(VENV_AIRFLOW)/bin/python -m hystate.demo_orchestrators airflow --dir "$(abspath ../hystate-demo-airflow)" --catalog processed

demo-cluster: install ## The same on 3 clones of a shared git daemon remote (../hystate-demo-cluster)
	$(BIN)/python -m hystate.demo_cluster --dir "$(abspath ../hystate-demo-cluster)" --catalog processed

test: install test-deps install-orchestrators ## Run the test suite (the orchestrators' tests in their venvs)
	$(BIN)/python -m pytest -q
	$(VENV_PREFECT)/bin/python -m pytest -q tests/integrations/prefect
	$(VENV_AIRFLOW)/bin/python -m pytest -q tests/integrations/airflow

test-deps: ## Debian packages the fault tests need (libfaketime), installed with apt when missing
	@if ! ls /usr/lib/*/faketime/libfaketime.so.1 >/dev/null 2>&1; then \
	  if command -v apt-get >/dev/null; then \
	    echo "make: installing faketime (clock-step tests)" >&2; \
	    as_root=""; [ "$$(id -u)" -eq 0 ] || as_root="sudo -n"; \
	    $$as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null && \
	    $$as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	      --no-install-recommends faketime >/dev/null || \
	    { echo "make: MISSING faketime: install the Debian package faketime" >&2; exit 1; }; \
	  else echo "make: MISSING libfaketime (Debian package faketime) and no apt-get" >&2; exit 1; fi; \
	fi

test-fast: install install-orchestrators ## Run the tests without the slow concurrency ones
	$(BIN)/python -m pytest -q -m "not slow"
	$(VENV_PREFECT)/bin/python -m pytest -q -m "not slow" tests/integrations/prefect
	$(VENV_AIRFLOW)/bin/python -m pytest -q -m "not slow" tests/integrations/airflow

lint: install ## ruff check, ruff format --check, mypy
	$(BIN)/ruff check hystate tests bench
	$(BIN)/ruff format --check hystate tests bench
	$(BIN)/mypy hystate

docs: install ## Check the README's commands against the code, build the site strictly into site/
	$(BIN)/python examples/check_readme.py
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

bench: install ## Run every benchmark in bench/ and rewrite docs/BENCHMARKS.md (~40 min)
	$(BIN)/python bench/run_all.py

clean: ## Remove the virtualenv and caches
	rm -rf $(VENV) $(VENV_PREFECT) $(VENV_AIRFLOW) .pytest_cache .mypy_cache .ruff_cache .hypothesis
