# hystate — `make help` lists the targets.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
DEMO_DIR ?= $(abspath ../hystate-demo)

.DEFAULT_GOAL := help
.PHONY: help install demo demo-cluster test test-fast lint docs bench catalog clean

help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP) ## Create .venv and install hystate with its dev tools

demo: install ## The simulated migration of the real catalog, in a scratch repo (../hystate-demo)
	$(BIN)/python -m hystate.demo --dir "$(DEMO_DIR)" --catalog processed

demo-cluster: install ## The same on 3 clones of a shared git daemon remote (../hystate-demo-cluster)
	$(BIN)/python -m hystate.demo_cluster --dir "$(abspath ../hystate-demo-cluster)" --catalog processed

test: install ## Run the test suite
	$(BIN)/python -m pytest -q

test-fast: install ## Run the tests without the slow concurrency ones
	$(BIN)/python -m pytest -q -m "not slow"

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
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
