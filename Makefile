# Set-up entry point: `make demo` and `make test` work on a fresh clone.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# checkov (the `scan` extra) pins packages the project's own venv must not get: a venv of its own.
SCAN_VENV ?= .venv-scan
RENDERED ?= .k8s-rendered

.PHONY: setup demo test test-quick lint k8s-scan schema quality throughput engine clean

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
	$(BIN)/pytest $(PARALLEL) --durations=30

test-quick: setup
	$(BIN)/pytest $(PARALLEL) -m "not integration and not slow"

lint: setup k8s-scan
	$(BIN)/ruff check schemas online_models streams tests benchmarks
	$(BIN)/ruff format --check schemas online_models streams tests benchmarks
	$(BIN)/mypy

$(SCAN_VENV)/bin/checkov: pyproject.toml
	$(PYTHON) -m venv $(SCAN_VENV)
	$(SCAN_VENV)/bin/python -m pip install --quiet $$($(PYTHON) -c "import tomllib; \
		print(' '.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['optional-dependencies']['scan']))")
	touch $@

# Every overlay rendered by kustomize (kubectl's), then checkov over it and the Dockerfile:
# offline (--skip-download), failing on any finding not skipped with a reason in the manifests.
k8s-scan: $(SCAN_VENV)/bin/checkov
	@command -v kubectl >/dev/null || { echo "k8s-scan needs kubectl (its kustomize) on the PATH"; exit 1; }
	rm -rf $(RENDERED) && mkdir -p $(RENDERED)
	for overlay in deploy/kubernetes/overlays/*/; do \
		kubectl kustomize $$overlay > $(RENDERED)/$$(basename $$overlay).yaml || exit 1; done
	$(SCAN_VENV)/bin/checkov --quiet --compact --skip-download --framework kubernetes -d $(RENDERED)
	$(SCAN_VENV)/bin/checkov --quiet --compact --skip-download --framework dockerfile -f deploy/Dockerfile

quality: setup
	$(BIN)/python benchmarks/quality.py

throughput: setup
	$(BIN)/python benchmarks/throughput.py

engine: setup
	$(BIN)/python benchmarks/engine.py

schema: setup
	$(BIN)/crm-scorer schema > schemas/crm-scorer.schema.json

clean:
	rm -rf $(VENV) $(SCAN_VENV) $(RENDERED) .crm-scorer .pytest_cache .mypy_cache .ruff_cache
