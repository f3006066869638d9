# shopsense — the two commands from a fresh clone are `make demo` and `make test`.
PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DATA_DIR ?= .shopsense-demo
export OPENBLAS_NUM_THREADS := 1

.PHONY: demo test lint typecheck unit bench-ingest bench-quality bench-quality-quick bench-ranking clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

# Loads the bundled Online Retail slice (CC BY 4.0) into the embedded store, shows what is there, trains the
# default recommendation pipeline and recommends for one customer. Re-running it is safe: the import is idempotent.
demo: $(STAMP)
	$(BIN)/shopsense --data-dir $(DATA_DIR) init
	$(BIN)/shopsense --data-dir $(DATA_DIR) import dataset online-retail tests/data/online_retail_sample.csv
	$(BIN)/shopsense --data-dir $(DATA_DIR) stats
	$(BIN)/shopsense --data-dir $(DATA_DIR) train
	$(BIN)/shopsense --data-dir $(DATA_DIR) recommend 17850 --k 5
	@echo "Store: $(DATA_DIR)/shopsense.duckdb — try: $(BIN)/shopsense --data-dir $(DATA_DIR) recommend 13047 --alpha 0.8"

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy src

unit: $(STAMP)
	$(BIN)/pytest -q

test: lint typecheck unit

bench-ingest: $(STAMP)
	$(BIN)/python benchmarks/ingest.py

bench-quality: $(STAMP)
	$(BIN)/python benchmarks/quality.py

bench-quality-quick: $(STAMP)
	$(BIN)/python benchmarks/quality.py --quick

# Needs the quality benchmark's cached reports for the shared datasets (it refits their best model).
bench-ranking: $(STAMP)
	$(BIN)/python benchmarks/ranking.py

clean:
	rm -rf $(VENV) $(DATA_DIR) .pytest_cache .mypy_cache .ruff_cache
