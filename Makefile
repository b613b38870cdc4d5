# ehrflow — the front door. `make demo` runs the reference scenario; `make test` runs every test.
# Needs only Python 3.11+, make, gcc/g++ and cmake: everything else is installed into .venv from requirements.lock
# (and the model servers into .venv-models from requirements-models.lock).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PACKAGES := libs/contracts libs/runtime services/auth services/ingest services/inference services/writeback devstack
PYPROJECTS := $(addsuffix /pyproject.toml,$(PACKAGES))
# The local model servers (MLServer, llama.cpp's server) in a virtualenv of their own: devstack/model_servers.
MODELS_VENV  := .venv-models
MODELS_STAMP := $(MODELS_VENV)/.installed
# The review screen's browser tests: Debian's Chromium and axe-core (ehrflow_devstack.browser).
BROWSER_STAMP := $(VENV)/.browser
# The Helm chart's policy scan: checkov pins an older `packaging` than pytest allows, so it has its own.
SCAN_VENV  := .venv-scan
SCAN_STAMP := $(SCAN_VENV)/.installed

.PHONY: help setup demo test test-unit test-integration stack docs asyncapi lint bench clean

help:
	@echo "make demo              run the reference scenario on a local stack (two sandbox EHRs)"
	@echo "make test              lint, then every test: unit, handler, integration and end-to-end on real parts"
	@echo "make lint              ruff (lint and format check) and mypy --strict"
	@echo "make stack             start the local stack and keep it running (Ctrl-C stops it)"
	@echo "make docs              regenerate docs/asyncapi/*.yaml, docs/contracts/*.schema.json and the chart's README from their sources"
	@echo "make bench             run the benchmarks and append their figures to docs/benchmarks.md"
	@echo "make clean             remove .venv and the local stack's state"

$(STAMP): requirements.lock $(PYPROJECTS)
	$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "ehrflow needs Python 3.11+")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@# The lock is complete: install exactly it and resolve nothing, so a release published later cannot
	@# change what gets installed (pip's resolver, asked to, reaches for new releases through extras).
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --require-hashes -r requirements.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation \
		$(addprefix -e ,$(PACKAGES))
	@# ...and prove it: every requirement of every installed package is met by what the lock installed.
	$(BIN)/python -m pip check --disable-pip-version-check
	touch $@

$(MODELS_STAMP): requirements-models.lock requirements-llama-server.lock devstack/model_servers/build-llama-server
	test -x $(MODELS_VENV)/bin/python || $(PYTHON) -m venv $(MODELS_VENV)
	$(MODELS_VENV)/bin/python -m pip install --quiet --disable-pip-version-check --no-deps --require-hashes \
		-r requirements-models.lock
	$(MODELS_VENV)/bin/python -m pip check --disable-pip-version-check
	@# llama.cpp's server is built from pinned source once per machine (cached outside the clone).
	devstack/model_servers/build-llama-server $(MODELS_VENV)/bin/python $(MODELS_VENV)/bin
	touch $@

$(SCAN_STAMP): requirements-scan.lock
	test -x $(SCAN_VENV)/bin/python || $(PYTHON) -m venv $(SCAN_VENV)
	$(SCAN_VENV)/bin/python -m pip install --quiet --disable-pip-version-check --no-deps --require-hashes \
		-r requirements-scan.lock
	$(SCAN_VENV)/bin/python -m pip check --disable-pip-version-check
	touch $@

$(BROWSER_STAMP): $(STAMP) devstack/src/ehrflow_devstack/browser.py
	$(BIN)/python -m ehrflow_devstack.browser
	touch $@

setup: $(STAMP) $(MODELS_STAMP) $(BROWSER_STAMP) $(SCAN_STAMP)

demo: setup
	$(BIN)/python -m ehrflow_devstack demo

stack: setup
	$(BIN)/python -m ehrflow_devstack up

# Two workers, each with a stack of its own: the tests marked xdist_group("waits") (a 5-minute JWKS cache, a
# 2-minute EHR outage) run on one while the rest run on the other.
test: lint
	$(BIN)/python -m pytest -n 2 --dist loadgroup

lint: setup
	$(BIN)/ruff check libs services devstack tests bench
	$(BIN)/ruff format --check libs services devstack tests bench
	$(BIN)/mypy libs/*/src services/*/src devstack/src

test-unit: setup
	$(BIN)/python -m pytest -m "not integration"

test-integration: setup
	$(BIN)/python -m pytest -m integration

bench: setup
	$(BIN)/python bench/auth/bench_auth.py --write docs/benchmarks.md
	$(BIN)/python bench/ingest/bench_ingest.py --write docs/benchmarks.md
	$(BIN)/python bench/inference/bench_inference.py --write docs/benchmarks.md
	$(BIN)/python bench/writeback/bench_writeback.py --write docs/benchmarks.md

docs: setup
	$(BIN)/python -m ehrflow_devstack asyncapi
	$(BIN)/ehrflow-inference contract-schemas --out docs/contracts
	$(BIN)/python -m ehrflow_devstack.chart_docs

asyncapi: docs

clean:
	rm -rf $(VENV) $(MODELS_VENV) $(SCAN_VENV) .ehrflow .pytest_cache
