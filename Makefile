# The project's vocabulary: make run, make test, make bench, make lint.
# Every install step lives here, so a fresh clone needs nothing but python3 and these targets.

VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
EMBEDDED_HOME := $(CURDIR)/.dagster_home
POSTGRES_HOME := $(CURDIR)/.dagster_home_postgres
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install browser run run-postgres test lint validate clean bench

install: $(VENV)/.installed

# torch first, from the local CPU build: any other torch request pulls several GB of CUDA packages.
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

# Debian's Chromium for the browser test (`playwright install` cannot download browsers here).
browser:
	@command -v chromium >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null; }

$(EMBEDDED_HOME)/dagster.yaml: dagster.yaml
	mkdir -p $(EMBEDDED_HOME) && cp dagster.yaml $@

$(POSTGRES_HOME)/dagster.yaml: deploy/postgres/dagster.yaml
	mkdir -p $(POSTGRES_HOME) && cp deploy/postgres/dagster.yaml $@

# The main job: dagster dev (webserver + daemon) on the embedded default; the local source's sensor syncs
# the bundled sample corpus into ./data/lancedb on its own.
run: install $(EMBEDDED_HOME)/dagster.yaml
	DAGSTER_HOME=$(EMBEDDED_HOME) $(BIN)/dagster dev -w workspace.yaml

# The same on PostgreSQL: set DAGSTER_PG_USERNAME, DAGSTER_PG_PASSWORD, DAGSTER_PG_HOST, DAGSTER_PG_DB.
run-postgres: install $(POSTGRES_HOME)/dagster.yaml
	DAGSTER_HOME=$(POSTGRES_HOME) $(BIN)/dagster dev -w workspace.yaml

validate: install $(EMBEDDED_HOME)/dagster.yaml
	DAGSTER_HOME=$(EMBEDDED_HOME) $(BIN)/dagster definitions validate -w workspace.yaml

test: install browser validate
	$(BIN)/pytest

lint: install
	$(BIN)/ruff check rag_sync_pipeline rag_sync_pipeline_tests rag_sync_pipeline_bench

# Issue #7's figures against the simulators and a local S3 server, one table on stdout, JSON in bench-results/.
# BENCH_PAGES=200 make bench for a quick run (default 4000 pages: about half an hour of encoding on 2 cores).
bench: install
	$(PY) -m rag_sync_pipeline_bench

clean:
	rm -rf $(EMBEDDED_HOME) $(POSTGRES_HOME) data test-artifacts
