# The two everyday commands: `make run` serves seatlock on :8000, `make test` runs the suite.
# Both create .venv on first use and reinstall when pyproject.toml changes.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed
# Test processes (pytest-xdist): one per core by default; 0 runs the suite in this one process
# (needed with SEATLOCK_TEST_REDIS_URL / SEATLOCK_TEST_DATABASE_URL: one set of servers).
TEST_WORKERS ?= auto

.PHONY: run test bench lint

$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/seatlock serve

test: $(STAMP)
	$(VENV)/bin/python -m pytest -q -n $(TEST_WORKERS)

bench: $(STAMP)
	$(VENV)/bin/seatlock bench

lint: $(STAMP)
	$(VENV)/bin/ruff check seatlock api db tests loadtests
	$(VENV)/bin/mypy
