# Two commands do everything on a fresh machine with Python 3.11: `make demo` and `make test`.
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo text-demo test lint typecheck bench clean lock

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]" -c constraints.txt
	touch $(STAMP)

# Re-pin constraints.txt to what pyproject.toml's ranges resolve to today (then run `make test`).
lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install -q --upgrade pip
	.lock-venv/bin/python -m pip install -q -e ".[dev,all-providers]"
	{ sed -n '/^#/p' constraints.txt; .lock-venv/bin/python -m pip freeze --exclude-editable; } > constraints.txt.new
	mv constraints.txt.new constraints.txt && rm -rf .lock-venv

demo: $(STAMP)
	$(PY) -m agent simulate

text-demo: $(STAMP)
	$(PY) -m brain

# The whole suite: Python tests, the bridge's JS client tests, and the browser tests of the page.
# pytest runs in PYTEST_WORKERS processes (pytest-xdist), a test file per process at a time: many
# tests wait on real-time audio, so two processes on two cores take ~5.5 min instead of ~9.
PYTEST_WORKERS ?= 2
test: $(STAMP)
	$(PY) -m pytest -q -n $(PYTEST_WORKERS) --dist loadfile
	node --test bridge/client/
	$(MAKE) test-web

lint: $(STAMP)
	$(VENV)/bin/ruff check agent brain bridge providers tests benchmarks

typecheck: $(STAMP)
	$(VENV)/bin/mypy agent brain bridge providers

# The quick benchmarks (~1 min); turn_latency, density and soak take 8+ minutes each (BENCHMARKS.md).
bench: $(STAMP)
	$(PY) benchmarks/brain_first_delta.py
	$(PY) benchmarks/bridge_bench.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

# Browser tests of the web page (web/tests): Debian's Chromium driven by playwright-core from npm,
# no browser download. Installs chromium with apt-get and web/node_modules with `npm ci` if missing.
CHROMIUM ?= /usr/bin/chromium
ROOT_OR_SUDO = $(if $(filter 0,$(shell id -u)),,sudo)

.PHONY: test-web
test-web: $(STAMP) web/node_modules/.package-lock.json
	test -x $(CHROMIUM) || { $(ROOT_OR_SUDO) apt-get update && $(ROOT_OR_SUDO) apt-get install -y chromium; }
	cd web && CHROMIUM_PATH=$(CHROMIUM) PYTHON=$(abspath $(PY)) node --test tests/*.test.mjs

web/node_modules/.package-lock.json: web/package.json web/package-lock.json
	cd web && npm ci --no-audit --no-fund
