# robench: `make run` (evaluate the shipped zoo, build the site) and `make test` (the whole suite).
# Both bootstrap .venv on a fresh clone.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.robench-installed
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
RESULTS ?= results
SITE ?= site

.PHONY: run test venv lock browser mutation mutation-report clean

LOCK := requirements/lock.txt
# -qq: errors only (pip's warnings about this machine's own index settings are not ours to show)
PIP_QUIET := $(PY) -m pip install -qq --disable-pip-version-check
UV_VERSION := 0.13.9

venv: $(STAMP)

# The venv holds exactly the lock (hash-checked, nothing resolved at install time) plus robench itself;
# it is made anew whenever the lock or the project's metadata change.
$(STAMP): setup.cfg setup.py $(LOCK)
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(PIP_QUIET) --require-hashes --no-deps -r $(LOCK)
	$(PIP_QUIET) --no-deps --no-build-isolation -e .
	$(PY) -m pip check --disable-pip-version-check >/dev/null
	touch $@

# Refresh the lock: the newest versions inside setup.cfg's ranges, for CPython 3.11 on Linux x86-64.
lock:
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP_QUIET) uv==$(UV_VERSION)
	$(VENV)/bin/uv pip compile setup.cfg --extra test --extra mutation --extra bench --upgrade --generate-hashes \
	  --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
	  --custom-compile-command "make lock" --quiet -o $(LOCK)

# Debian's Chromium and ChromeDriver for the browser tests of the site
browser:
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
	  echo "installing chromium and chromium-driver for the browser tests"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium chromium-driver >/dev/null; \
	fi

run: $(STAMP)
	$(VENV)/bin/robench evaluate-zoo --dataset digits --out $(RESULTS) --verify --verify-time-limit 5
	$(VENV)/bin/robench leaderboard build --results $(RESULTS) --out $(SITE)
	$(VENV)/bin/robench leaderboard show --results $(RESULTS) --top 3
	@echo "site written to $(SITE)/index.html"

test: $(STAMP) browser
	$(PY) -m pytest

# Mutation testing (hours on two cores; docs/development.md): mutmut's settings are setup.cfg's [mutmut]
mutation: $(STAMP)
	$(VENV)/bin/mutmut run --max-children $(shell nproc)
	$(PY) benchmarks/mutation_summary.py

mutation-report: $(STAMP)
	$(PY) benchmarks/mutation_summary.py --survivors

clean:
	rm -rf $(SITE) $(RESULTS) test-artifacts .pytest_cache mutants
