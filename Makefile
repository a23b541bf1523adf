# Switchboard: `make run` starts the server, `make test` runs every test.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test lint migrate system-deps clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) || { \
	  echo "Could not create a virtualenv: install python3-venv (apt-get install python3-venv)"; exit 1; }
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

run: $(STAMP)
	$(PY) manage.py migrate --noinput
	$(PY) manage.py ensure_manager
	$(PY) manage.py runswitchboard

# Debian packages the tests need (Dovecot as the real IMAP server).
system-deps:
	@bash scripts/install-system-deps.sh

test: $(STAMP) system-deps
	$(PY) -m ruff check .
	@# The browser tests run on their own: Playwright's sync API keeps an event loop running in
	@# the main thread for the whole session, which every async_to_sync after it would refuse.
	$(PY) -m pytest --ignore=tests/browser $(PYTEST_ARGS)
	$(PY) -m pytest tests/browser $(PYTEST_ARGS)

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

migrate: $(STAMP)
	$(PY) manage.py migrate --noinput

clean:
	rm -rf $(VENV) var/test
