# lightning_seg: the commands a newcomer needs. `make help` lists them.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# what the demo needs (lightning_seg and its core dependencies): a first `make demo` installs only that
DEMO_STAMP := $(VENV)/.installed-core

.PHONY: help install demo test test-slow lint format bench clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP) $(DEMO_STAMP)

$(DEMO_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e .
	touch $(DEMO_STAMP)

install: $(STAMP)  ## create .venv and install lightning_seg with its dev tools (reused afterwards)

demo: $(DEMO_STAMP)  ## install only what it needs, train the offline default (synthetic shapes, CPU ok), predict a few images
	$(PY) -m lightning_seg.cli.demo

test: $(STAMP)  ## the fast test suite (what CI runs)
	$(PY) -m pytest -q

test-slow: $(STAMP)  ## only the slow tests (real CamVid when present, DDP on CPU)
	$(PY) -m pytest -q -m slow

lint: $(STAMP)  ## ruff checks and the package's layers (import-linter)
	$(PY) -m ruff check lightning_seg tests benchmarks
	$(VENV)/bin/lint-imports

format: $(STAMP)  ## ruff format
	$(PY) -m ruff format lightning_seg tests benchmarks

bench: $(STAMP)  ## training throughput of the default config against a bare PyTorch loop
	$(PY) benchmarks/throughput.py --config configs/default.yaml

clean:  ## remove run outputs (keeps the venv)
	rm -rf runs lightning_logs .pytest_cache
