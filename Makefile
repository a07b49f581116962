# keyferry — every target creates .venv on first use and installs what it needs.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck unit proto bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

demo: $(STAMP)
	$(VENV)/bin/keyferry demo

test: lint typecheck unit

lint: $(STAMP)
	$(VENV)/bin/ruff check provider tests bench
	$(VENV)/bin/ruff format --check provider tests bench

typecheck: $(STAMP)
	$(VENV)/bin/mypy provider

unit: $(STAMP)
	$(PY) -m pytest -q

proto: $(STAMP)
	$(PY) -m provider._proto.generate

bench: $(STAMP)
	$(PY) bench/mount_latency.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
