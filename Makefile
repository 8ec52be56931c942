# Credit Exchange: `make test` and (later) `make demo` set up everything they need.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: venv test bench bench-portal chaos fuzz demo services dist clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check --upgrade pip
	PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 $(BIN)/python -m pip install -q --disable-pip-version-check -e '.[test]'
	@rm -f $(VENV)/.installed-* && touch $@

services:
	@ops/dev/services.sh

test: venv services
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# end to end against the raw broker (BENCH_ARGS: options of bench/e2e.py, e.g. --quick), the hub's ingest
# rate, the compliance reports and the node's outbox size on this machine; figures in bench-results/
bench: venv services
	$(BIN)/python bench/e2e.py --out bench-results $(BENCH_ARGS)
	$(BIN)/python bench/hub_ingest.py --out bench-results/hub-ingest.json
	$(BIN)/python bench/hub_ingest.py --store postgresql --out bench-results/hub-ingest-postgresql.json
	$(BIN)/python bench/compliance.py --out bench-results
	$(BIN)/python bench/compliance.py --store postgresql --out bench-results
	$(BIN)/python bench/outbox_size.py --out bench-results/outbox-size.json

# three departments, 200,000 rows, the broker, the hub and the nodes broken under them; on both hub stores.
# Prints its figures; CHAOS_ARGS passes options (python tests/chaos.py --help)
chaos: venv services
	$(BIN)/python tests/chaos.py $(CHAOS_ARGS)

# 100,000 hostile cases through a running hub on each store, valid batches between them; every message accounted
# for. Prints its figures; FUZZ_ARGS passes options (python tests/fuzz.py --help)
fuzz: venv services
	$(BIN)/python tests/fuzz.py $(FUZZ_ARGS)

# the public portal over 1,000,000 generated enterprises and 5,000,000 records, on SQLite and PostgreSQL:
# search and enterprise-page latency against a running hub; figures in bench-results/portal.json and .md.
# The corpus is made once (the long part, kept in var/bench-portal/); PORTAL_BENCH_ARGS passes options
# (python bench/portal.py --help), e.g. PORTAL_BENCH_ARGS="--enterprises 200000 --records 1000000"
bench-portal: venv services
	$(BIN)/python bench/portal.py $(PORTAL_BENCH_ARGS)

# the wheel, the sdist and every dependency as a wheel, for a department's machine without internet (dist/)
dist: venv
	$(BIN)/python ops/dev/dist.py --out dist

# a hub and four Luoyang departments exchanging generated records; Ctrl-C stops it.
# RESET=1 starts afresh; DEMO_ARGS passes options (python -m cx.demo --help); CX_AMQP_URL uses another broker
demo: venv
	@if [ -z "$$CX_AMQP_URL" ]; then ops/dev/services.sh rabbitmq management; fi
	@ops/dev/services.sh pdf || echo "PDF compliance reports need the packages named above (HTML, XLSX and CSV work)"
	@ops/dev/services.sh postgres 2>/dev/null || echo "PostgreSQL not available: the food and drug department uses SQLite"
	$(BIN)/python -m cx.demo $(if $(RESET),--reset) $(DEMO_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis build dist *.egg-info var
