# The two Quickstart commands: `make demo` and `make test`. Each creates .venv when needed.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat requirements/*.txt pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: demo test lint typecheck unit bench docs clean

$(STAMP):
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements/test.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/python examples/demo.py

lint: $(STAMP)
	$(BIN)/ruff check $(wildcard otel_sentry_bridge instrumentation tests examples benchmarks scripts)
	$(BIN)/python scripts/gen_config_docs.py --check

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/python -m pytest -q

test: lint typecheck unit

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_core.py

docs: $(STAMP)
	$(BIN)/python scripts/gen_config_docs.py

clean:
	rm -rf $(VENV) .demo-envelopes
