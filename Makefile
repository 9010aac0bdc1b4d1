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
	test-fast lint docs bench catalog clean

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

# Both cores; tests that share something outside their tmp_path carry an xdist_group mark.
# Any skipped test fails the run (tests/conftest.py): tools/deps.sh installs what they need.
# tools/test.sh runs the Prefect and Airflow tests (their own venvs) beside the main suite.
PYTEST_PAR ?= -n 2 --dist loadgroup

test: install install-orchestrators ## Run the test suite on 2 cores, the orchestrators' tests beside it (<26 min)
	tools/deps.sh
	BIN=$(BIN) VENV_PREFECT=$(VENV_PREFECT) VENV_AIRFLOW=$(VENV_AIRFLOW) PYTEST_PAR="$(PYTEST_PAR)" tools/test.sh

test-fast: install install-orchestrators ## Run the tests without the slow concurrency ones
	tools/deps.sh
	BIN=$(BIN) VENV_PREFECT=$(VENV_PREFECT) VENV_AIRFLOW=$(VENV_AIRFLOW) PYTEST_PAR="$(PYTEST_PAR)" tools/test.sh -m "not slow"

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
