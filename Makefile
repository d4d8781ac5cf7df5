# Two commands on a fresh clone: `make run` and `make test` (see README.md).
PYTHON ?= $(shell command -v python3.11 2>/dev/null || echo python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.requirements-installed
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test fuzz lint format bench migrate manage sshd test-tools services clean

$(STAMP): requirements.txt
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "homelab needs Python 3.11"' \
	  || { echo "Set PYTHON to a Python 3.11 interpreter, e.g. make PYTHON=/usr/bin/python3.11"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $(STAMP)

.dev-secret-key:
	@$(PYTHON) -c 'import secrets; print(secrets.token_urlsafe(50))' > $@
	@chmod 600 $@

migrate: $(STAMP) .dev-secret-key
	DJANGO_SECRET_KEY=$${DJANGO_SECRET_KEY:-$$(cat .dev-secret-key)} $(BIN)/python manage.py migrate --noinput

# One process migrates (when needed), collects static files, runs markinterrupted and
# resetmetrics, then serves with daphne: Django loads once (commands/management/commands/serve.py).
run: $(STAMP) .dev-secret-key
	@exec $(BIN)/python manage.py serve --host $(HOST) --port $(PORT)

# `make manage ARGS="trusthost nas"`: ./manage.py (settings read .dev-secret-key), after
# `migrate` only when a migration is pending, and then quietly: `migrate --check` is a
# read-only look, where a full `migrate` costs seconds and prints on every call.
manage: $(STAMP) .dev-secret-key
	@$(BIN)/python manage.py migrate --check >/dev/null 2>&1 || $(BIN)/python manage.py migrate --noinput -v 0
	@./manage.py $(ARGS)

sshd:
	@scripts/ensure-sshd

# sudo and nginx, for the tests of the per-server sudo flag and of the documented proxy.
test-tools:
	@scripts/ensure-sudo
	@scripts/ensure-nginx
	@scripts/ensure-chromium

# PostgreSQL and Redis on loopback for the production-profile tests (installed and started
# when missing; left alone when HOMELAB_TEST_POSTGRES_URL / HOMELAB_TEST_REDIS_URL point elsewhere).
services:
	@scripts/ensure-services

test: $(STAMP) sshd test-tools services
	DJANGO_SECRET_KEY=test-only-secret-key $(BIN)/pytest $(PYTEST_ARGS)

# A deeper schemathesis pass than `make test`'s (tests/test_fuzz.py): FUZZ_EXAMPLES cases per
# operation and phase, on SQLite and PostgreSQL; 40 gives ~1,200 requests in all. Then the
# hand-written cases schemathesis cannot generate (tests/test_fuzz_cases.py: lone
# surrogates and other JSON strings to every write endpoint, bad limit/offset), as many.
FUZZ_EXAMPLES ?= 400
fuzz: $(STAMP) sshd services
	HOMELAB_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) DJANGO_SECRET_KEY=test-only-secret-key \
	  $(BIN)/pytest -p no:cacheprovider --timeout=7200 tests/test_fuzz.py tests/test_fuzz_cases.py \
	  $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# Issue 12's figures, each with its goal (docs/performance.md): latency against OpenSSH and
# ansible, 50 at once on one server, 50 servers, throughput. The older benches
# (executor_latency, executor_memory, api_latency, stream, asgi_servers) run on their own.
# Issue 20's throughput and start-up rows compare with the code before that issue's work
# (025b19b), in the same run.
BENCH_BASELINE ?= 025b19b

bench: $(STAMP) sshd services
	$(BIN)/pip install --quiet --disable-pip-version-check -r bench/requirements.txt
	$(BIN)/python bench/compare.py
	$(BIN)/python bench/concurrency.py
	$(BIN)/python bench/many_servers.py
	$(BIN)/python bench/throughput.py --baseline $(BENCH_BASELINE) --rounds 3 --seconds 8
	$(BIN)/python bench/startup.py --baseline $(BENCH_BASELINE)

clean:
	rm -rf $(VENV) staticfiles .pytest_cache .ruff_cache
