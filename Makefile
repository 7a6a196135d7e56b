# The checks CI runs, one target each. `make check` runs them all, as .ci/run does after installing.
# Everything runs from the project's virtual environment (`make venv` makes it).
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: venv lint format types test check load-test

venv:  ## the Quick start's install: the working tree, editable, with the test and dev tools
	python3 -m venv $(VENV) && $(BIN)/pip install -e '.[dev]'

lint:  ## ruff's lint rules, and the formatting, checked (never rewritten)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format:  ## rewrite the code as ruff formats it
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

types:  ## mypy --strict on agent/ and tests/ (see [tool.mypy] in pyproject.toml)
	$(BIN)/mypy

test:  ## the whole suite
	$(BIN)/pytest

check: test lint types

load-test:  ## the suite 20 times in a row with both cores busy (README, Development)
	@python3 -c "while True: pass" & a=$$!; python3 -c "while True: pass" & b=$$!; \
	trap 'kill $$a $$b' EXIT; \
	for i in $$(seq 20); do $(BIN)/pytest -q -p no:cacheprovider || exit 1; done
