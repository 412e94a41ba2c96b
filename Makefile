# Mailroom: `make demo` runs a real campaign end to end; `make test` runs every test.
SHELL := /bin/bash
UV ?= $(shell command -v uv 2>/dev/null || echo .venv-tools/bin/uv)
PYTHON := .venv/bin/python

.PHONY: install demo test test-faults test-unit lint bench clean

# uv comes from PyPI when the machine lacks it; the workspace is installed from uv.lock.
$(UV):
	python3 -m venv .venv-tools && .venv-tools/bin/pip install --quiet uv

install: $(UV)
	$(UV) sync --frozen

demo: install
	.venv/bin/mailroom demo

# The fault matrix restarts RabbitMQ and PostgreSQL: it runs after everything else, alone.
test: install
	$(PYTHON) -m pytest -rfEsxXP -m "not faults"
	$(PYTHON) -m pytest -rfEsxXP -m faults

test-faults: install
	$(PYTHON) -m pytest -rfEsxXP -m faults

test-unit: install
	$(PYTHON) -m pytest -ra tests/unit

lint: install
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy libs services mailroom tests
	.venv/bin/lint-imports --no-cache

clean:
	rm -rf .venv .venv-tools .pytest_cache .mypy_cache .ruff_cache

bench: install
	.venv/bin/mailroom bench
