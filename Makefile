# shopsense — the two commands from a fresh clone are `make demo` and `make test`.
PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DATA_DIR ?= .shopsense-demo
export OPENBLAS_NUM_THREADS := 1

.PHONY: demo test lint typecheck unit system-packages test-postgres bench-ingest bench-quality bench-quality-quick bench-ranking bench-serve bench-serve-postgres bench-startup clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet -e '.[dev,neural,spark]'
	touch $(STAMP)

DEMO_SAMPLE := src/shopsense/data/online_retail_demo.csv.gz

# Loads the bundled Online Retail sample (a year of 1,000 customers, CC BY 4.0) into the embedded store, shows
# what is there, trains the default recommendation pipeline (printing its held-out scores), recommends for one
# customer, builds customer profiles, then serves the REST API and the dashboard on 127.0.0.1:8000 (Ctrl-C stops it).
# Re-running it is safe: the import is idempotent and the demo key is reused.
demo: $(STAMP)
	$(BIN)/shopsense --data-dir $(DATA_DIR) init
	$(BIN)/shopsense --data-dir $(DATA_DIR) import dataset online-retail $(DEMO_SAMPLE)
	$(BIN)/shopsense --data-dir $(DATA_DIR) stats
	$(BIN)/shopsense --data-dir $(DATA_DIR) train
	$(BIN)/shopsense --data-dir $(DATA_DIR) recommend 17850 --k 10
	$(BIN)/shopsense --data-dir $(DATA_DIR) profiles build
	@test -s $(DATA_DIR)/demo.key || $(BIN)/shopsense --data-dir $(DATA_DIR) keys create demo --scope admin > $(DATA_DIR)/demo.key
	@echo ""
	@echo "REST API on http://127.0.0.1:8000/v1 (OpenAPI docs: http://127.0.0.1:8000/docs); admin key in $(DATA_DIR)/demo.key."
	@echo "Try, from another terminal:"
	@echo "  KEY=\$$(cat $(DATA_DIR)/demo.key)"
	@echo "  curl -H \"Authorization: Bearer \$$KEY\" 'http://127.0.0.1:8000/v1/recommendations?user_id=17850&k=5'"
	@echo "  curl -H \"Authorization: Bearer \$$KEY\" -H 'Content-Type: application/json' -X POST http://127.0.0.1:8000/v1/events \\"
	@echo "       -d '{\"user_id\": \"17850\", \"item_id\": \"22423\", \"type\": \"cart\", \"timestamp\": \"'\$$(date -u +%FT%TZ)'\"}'"
	@echo "  curl -H \"Authorization: Bearer \$$KEY\" 'http://127.0.0.1:8000/v1/items/22423/similar?k=5'"
	@echo ""
	@echo "Dashboard on http://127.0.0.1:8000/ : sign in with this key (also in $(DATA_DIR)/demo.key):"
	@echo "  $$(cat $(DATA_DIR)/demo.key)"
	$(BIN)/shopsense --data-dir $(DATA_DIR) serve

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks tools
	$(BIN)/ruff format --check src tests benchmarks tools

typecheck: $(STAMP)
	$(BIN)/mypy src

# The browser tests (tests/browser) drive Debian's Chromium, and the Spark-over-JDBC test (tests/unit/spark/test_jdbc.py)
# needs Debian's PostgreSQL JDBC driver; both are installed here when missing and running as root (never
# `playwright install`, which downloads a browser). Without them those tests skip, and fail under CI=true.
CHROMIUM := /usr/bin/chromium
JDBC_JAR := /usr/share/java/postgresql.jar

system-packages:
	@test -x $(CHROMIUM) -a -f $(JDBC_JAR) || if [ "$$(id -u)" = 0 ]; then apt-get update -q && \
	apt-get install -y -q chromium libpostgresql-jdbc-java; else echo "*** the browser and JDBC tests need \
	$(CHROMIUM) and $(JDBC_JAR): run 'apt-get install -y chromium libpostgresql-jdbc-java' as root ***"; fi

unit: $(STAMP) system-packages
	$(BIN)/pytest -q

test: lint typecheck unit

# Only the tests that run on PostgreSQL: the throwaway server (tests/postgres.py) and the store contract's
# postgresql params. `make test` runs them too; they are skipped where no PostgreSQL 15+ is installed.
test-postgres: $(STAMP)
	$(BIN)/pytest -q tests/integration/test_postgres_server.py tests/contracts/test_store.py -k postgres

bench-ingest: $(STAMP)
	$(BIN)/python benchmarks/ingest.py

bench-quality: $(STAMP)
	$(BIN)/python benchmarks/quality.py

bench-quality-quick: $(STAMP)
	$(BIN)/python benchmarks/quality.py --quick

# Needs the quality benchmark's cached reports for the shared datasets (it refits their best model).
bench-ranking: $(STAMP)
	$(BIN)/python benchmarks/ranking.py

bench-serve: $(STAMP)
	$(BIN)/python benchmarks/serve.py

# The same phases on PostgreSQL (a throwaway durable server, PostgreSQL 15+ binaries needed) and 2 replicas,
# plus the file import and 20 kill -9 trials: benchmarks/results/serve-postgres.md.
bench-serve-postgres: $(STAMP)
	$(BIN)/python benchmarks/serve.py --store postgresql --replicas 2 --seconds 15

# Seconds from typing a command to its end: `shopsense --help`, `shopsense stats` on a small store, the CLI import.
bench-startup: $(STAMP)
	$(BIN)/python benchmarks/startup.py

clean:
	rm -rf $(VENV) $(DATA_DIR) .pytest_cache .mypy_cache .ruff_cache
