# Two entry points do all the set-up on a fresh machine (Python >= 3.10, Node 20 + npm):
#   make demo   - install into .venv, then `ctxdoctor run` around the shipped Node.js worker_threads
#                 app (falls back to diagnosing its recorded dump where Node.js is missing)
#   make test   - install with test extras, npm ci for the end-to-end apps, run every check
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
NODE_APPS := fixtures/apps/node
NODE_STAMP := $(NODE_APPS)/node_modules/.installed-stamp

.PHONY: demo test lint install node fixtures clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

install: $(STAMP)

$(NODE_STAMP): $(NODE_APPS)/package.json $(NODE_APPS)/package-lock.json
	cd $(NODE_APPS) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

node: $(NODE_STAMP)

# The whole loop, live, twice: the thumbnail service hands work to worker threads from inside a
# request (a SERVER span) without passing the context; then the seed's processInWorker as written,
# where the dispatching span is itself a root (a batch script, a CLI command, a test case).
# ctxdoctor receives the spans, names the gap and prints the fix.
DEMO_ENV := CTX_MODE=naive CTX_TASKS=6 CTX_CONCURRENCY=2
DEMO_ROOT_ENV := CTX_MODE=naive CTX_DISPATCHER=root CTX_HANDOFF=thread CTX_WAIT=await CTX_ITEMS=6 CTX_INFLIGHT=2
demo: $(STAMP)
	@if command -v node >/dev/null 2>&1 && $(MAKE) --no-print-directory node; then \
		echo "== 1. dispatching span under a SERVER span (a request handler)"; \
		$(DEMO_ENV) $(BIN)/ctxdoctor run --output $(VENV)/demo-dump.json -- node $(NODE_APPS)/worker_threads.js; \
		echo; echo "== 2. dispatching span is itself a root (the seed's processInWorker in a batch script)"; \
		$(DEMO_ROOT_ENV) $(BIN)/ctxdoctor run --output $(VENV)/demo-root-dump.json -- node $(NODE_APPS)/matrix.js; \
	else \
		echo "Node.js is not available: diagnosing the dump this app recorded instead."; \
		$(BIN)/ctxdoctor analyze fixtures/scenarios/node-worker-threads-naive/dump.json; \
	fi

lint: $(STAMP)
	$(BIN)/ruff check ctxdoctor tests bench fixtures
	$(BIN)/mypy

test: $(STAMP) $(NODE_STAMP) lint
	$(BIN)/python -m pytest -q

# Re-record every fixture dump from the real apps (needs Node.js for the Node.js scenarios).
fixtures: $(STAMP) $(NODE_STAMP)
	$(BIN)/python fixtures/record.py

clean:
	rm -rf $(VENV) $(NODE_APPS)/node_modules .pytest_cache .mypy_cache .ruff_cache

# Benchmarks of issue 6 (not tests; see bench/README.md). Minutes each; the machine should be idle.
.PHONY: bench-analyze bench-listen
bench-analyze: $(STAMP)
	$(BIN)/python bench/analyze.py

bench-listen: $(STAMP)
	$(BIN)/python bench/listen.py
