# Airloop: `make demo` runs the whole loop on the embedded default; `make test` runs the tests.
SHELL := /bin/bash
export AIRLOOP_HOME ?= $(CURDIR)/.airloop
export PATH := $(CURDIR)/.venv/bin:$(PATH)
# No MLflow telemetry: it calls out to the internet, and its thread raced GX over os.environ (settings.py).
export MLFLOW_DISABLE_TELEMETRY ?= true
UV := $(shell command -v uv 2>/dev/null || echo "python3 -m uv")
PYTEST_ARGS ?=
# Browser tests drive Debian's Chromium through Playwright (Playwright cannot download its own browsers here).
CHROMIUM ?= /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: install browser demo test test-fast lint format ui mlflow-ui status bench up down clean

# Bytecode is compiled at install: where PYTHONDONTWRITEBYTECODE is set (as on these machines) Python would
# otherwise compile every module from source in every process, and each Airflow task process imports thousands.
.venv/.installed: pyproject.toml uv.lock Makefile
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install --quiet uv
	$(UV) sync --frozen --compile-bytecode
	@touch $@

# Airloop's own modules too (only what changed since the last call is recompiled).
install: .venv/.installed
	@.venv/bin/python -m compileall -q plugins dags >/dev/null

$(CHROMIUM):
	@echo "Installing Debian's chromium for the browser tests"
	$(SUDO) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium

browser: $(CHROMIUM)

# bench_serve's load generator (it falls back to a one-thread Python client without it).
WRK ?= /usr/bin/wrk
$(WRK):
	@echo "Installing Debian's wrk for the serving benchmark"
	$(SUDO) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq wrk

demo: install  ## the whole loop on simulated data, through Airflow's own scheduler (`airloop demo --in-process`: dag.test)
	.venv/bin/airloop demo

test: install $(CHROMIUM)  ## the whole test suite, as CI runs it
	.venv/bin/pytest $(PYTEST_ARGS)

test-fast: install
	.venv/bin/pytest -m "not slow and not integration" $(PYTEST_ARGS)

lint: install
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .

format: install
	.venv/bin/ruff format .
	.venv/bin/ruff check --fix .

status: install
	.venv/bin/airloop status

ui: install  ## Airflow (scheduler, UI, ...) on the demo's state: http://127.0.0.1:8080, login printed; Ctrl-C stops it
	exec .venv/bin/airloop ui --port $${AIRLOOP_UI_PORT:-8080}

mlflow-ui: install  ## the MLflow UI on the demo's state (http://127.0.0.1:5000)
	.venv/bin/mlflow ui --app-name airloop --backend-store-uri "sqlite:///$(AIRLOOP_HOME)/mlflow/mlflow.db" \
	  --default-artifact-root "file://$(AIRLOOP_HOME)/mlflow/artifacts" --host 127.0.0.1 --port 5000

bench: install $(WRK)  ## speed and memory targets, measured side by side with their anchors (bench/README.md)
	$(UV) sync --frozen --compile-bytecode --group bench
	@missed=""; for b in bench/bench_*.py; do echo "== $$b"; .venv/bin/python $$b || missed="$$missed $$b"; done; \
	  $(UV) sync --frozen --compile-bytecode; \
	  if [ -n "$$missed" ]; then echo "make bench: targets not met (or an error) in:$$missed"; exit 1; fi

clean:  ## a clean reset of all local state
	rm -rf "$(AIRLOOP_HOME)"

up:  ## the production topology with Docker Compose (needs .env, see .env.example and docs/deploy.md)
	@test -f .env || { echo "make up: copy .env.example to .env and set its secrets first (docs/deploy.md)"; exit 1; }
	@! grep -n '=change-me' .env || { echo "make up: set the secrets listed above in .env first"; exit 1; }
	@command -v docker >/dev/null || { echo "make up: needs Docker with the compose plugin"; exit 1; }
	docker compose up -d --build
	@echo "Airflow http://localhost:8080, MLflow http://localhost:5000, model API http://localhost:8000"

down:  ## stop the compose topology (named volumes are kept; `docker compose down -v` deletes them)
	docker compose down
