# Set-up entry point: `make demo` and `make test` work on a fresh clone.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup demo test test-quick lint schema quality throughput engine clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,bench,report]'
	touch $@

setup: $(BIN)/.installed

demo: setup
	$(BIN)/crm-scorer demo

# Tests run in parallel: most of them wait on a broker, Redis or a worker process, not on a core.
TEST_PROCESSES ?= 4
PARALLEL := -n $(TEST_PROCESSES) --dist loadgroup --no-loadscope-reorder

test: setup
	$(BIN)/pytest $(PARALLEL) --durations=10

test-quick: setup
	$(BIN)/pytest $(PARALLEL) -m "not integration and not slow"

lint: setup
	$(BIN)/ruff check schemas online_models streams tests benchmarks
	$(BIN)/ruff format --check schemas online_models streams tests benchmarks
	$(BIN)/mypy

quality: setup
	$(BIN)/python benchmarks/quality.py

throughput: setup
	$(BIN)/python benchmarks/throughput.py

engine: setup
	$(BIN)/python benchmarks/engine.py

schema: setup
	$(BIN)/crm-scorer schema > schemas/crm-scorer.schema.json

clean:
	rm -rf $(VENV) .crm-scorer .pytest_cache .mypy_cache .ruff_cache
