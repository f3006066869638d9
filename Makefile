# shopsense — the two commands from a fresh clone are `make demo` and `make test`.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DATA_DIR ?= .shopsense-demo
export OPENBLAS_NUM_THREADS := 1

.PHONY: demo test lint typecheck unit bench-ingest clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/shopsense --data-dir $(DATA_DIR) init
	$(BIN)/shopsense --data-dir $(DATA_DIR) import online-retail tests/data/online_retail_sample.csv
	$(BIN)/shopsense --data-dir $(DATA_DIR) generate --users 500 --items 300 --events 20000 --out $(DATA_DIR)/synthetic
	$(BIN)/shopsense --data-dir $(DATA_DIR) import items $(DATA_DIR)/synthetic/items.parquet --extra keep
	$(BIN)/shopsense --data-dir $(DATA_DIR) import users $(DATA_DIR)/synthetic/users.parquet --extra keep
	$(BIN)/shopsense --data-dir $(DATA_DIR) import events $(DATA_DIR)/synthetic/events.parquet
	$(BIN)/shopsense --data-dir $(DATA_DIR) stats

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

clean:
	rm -rf $(VENV) $(DATA_DIR) .pytest_cache .mypy_cache .ruff_cache
