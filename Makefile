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

.PHONY: run test venv browser clean

venv: $(STAMP)

$(STAMP): setup.cfg setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $@

# Debian's Chromium and ChromeDriver for the browser tests of the site
browser:
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
	  echo "installing chromium and chromium-driver for the browser tests"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium chromium-driver >/dev/null; \
	fi

run: $(STAMP)
	$(VENV)/bin/robench evaluate-zoo --dataset digits --channels-last --out $(RESULTS)
	$(VENV)/bin/robench leaderboard build --results $(RESULTS) --out $(SITE)
	@echo "site written to $(SITE)/index.html"

test: $(STAMP) browser
	$(PY) -m pytest

clean:
	rm -rf $(SITE) $(RESULTS) test-artifacts .pytest_cache
