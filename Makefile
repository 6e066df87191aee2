# Shared Ledger: `make run` serves on an embedded PostgreSQL (the pgserver
# wheel) and an in-process cache; `make test` runs the whole suite against PostgreSQL and
# Redis (127.0.0.1 by default, override DATABASE_URL / REDIS_URL).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-dev
RUN_STAMP := $(VENV)/.installed-run

TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/ledger
TEST_REDIS_URL ?= redis://127.0.0.1:6379/1
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: install run stop test faults image-test lint fmt check clean bench bench-instructions bench-grant

# `make run` installs what running needs; everything else the test extras.
$(RUN_STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[embedded]'
	touch $(RUN_STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP) $(RUN_STAMP)

install: $(STAMP)

run: $(RUN_STAMP)
	DJANGO_DEBUG=$${DJANGO_DEBUG:-1} $(BIN)/python manage.py migrate --noinput
	@echo ""
	@echo "Shared Ledger on http://$(HOST):$(PORT)/"
	@echo "  API:    http://$(HOST):$(PORT)/api/auth/register/  (then /api/auth/token/)"
	@echo "  Admin:  http://$(HOST):$(PORT)/admin/"
	@echo "  Create an admin: DJANGO_DEBUG=1 $(BIN)/python manage.py createsuperuser"
	@echo "  The embedded PostgreSQL (var/pgdata) keeps running after this; make stop stops it."
	@echo ""
	DJANGO_DEBUG=$${DJANGO_DEBUG:-1} LOG_FORMAT=$${LOG_FORMAT:-console} $(BIN)/python manage.py runserver $(HOST):$(PORT)

# Stop the embedded PostgreSQL that `make run` (or a command) started.
stop:
	@if [ -x $(BIN)/python ]; then $(BIN)/python -m ledger_site.embedded stop; fi

test: $(STAMP)
	scripts/ensure-tools.sh test
	DATABASE_URL=$${DATABASE_URL:-$(TEST_DATABASE_URL)} \
	REDIS_URL=$${REDIS_URL:-$(TEST_REDIS_URL)} \
	DJANGO_DEBUG=0 DJANGO_SECURE=0 DJANGO_SECRET_KEY=$${DJANGO_SECRET_KEY:-test-secret-key-not-for-production} \
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The fault suite: its own PostgreSQL cluster (Debian's pg_createcluster, on a
# free port), its own redis-server and gunicorn, killed, frozen and restarted.
faults: $(STAMP)
	scripts/ensure-tools.sh faults
	DATABASE_URL=$${DATABASE_URL:-$(TEST_DATABASE_URL)} REDIS_URL=$${REDIS_URL:-$(TEST_REDIS_URL)} \
	DJANGO_DEBUG=0 DJANGO_SECURE=0 DJANGO_SECRET_KEY=$${DJANGO_SECRET_KEY:-test-secret-key-not-for-production} \
	$(BIN)/python -m pytest -m faults tests/faults $(PYTEST_ARGS)

# The runtime image of docker/Dockerfile, built with podman (chroot isolation)
# from a Debian stand-in for its base image, and run as a root filesystem
# (containers cannot start here). Skipped, loudly, only where podman cannot
# be installed.
image-test: $(STAMP)
	@if ! scripts/ensure-tools.sh image; then \
		echo "!!! podman/debootstrap cannot be installed here: the image is NOT tested !!!"; \
		exit 0; fi; \
	scripts/image-base.sh && \
	DATABASE_URL=$${DATABASE_URL:-$(TEST_DATABASE_URL)} REDIS_URL=$${REDIS_URL:-$(TEST_REDIS_URL)} \
	DJANGO_DEBUG=0 DJANGO_SECURE=0 DJANGO_SECRET_KEY=$${DJANGO_SECRET_KEY:-test-secret-key-not-for-production} \
	$(BIN)/python -m pytest -m image tests/image $(PYTEST_ARGS)

BENCH_ENV = DATABASE_URL=$${DATABASE_URL:-$(TEST_DATABASE_URL)} \
	REDIS_URL=$${REDIS_URL:-redis://127.0.0.1:6379/2}

bench: $(STAMP)
	scripts/ensure-tools.sh bench
	$(BENCH_ENV) $(BIN)/python -m bench.run $(BENCH_ARGS)
	$(BENCH_ENV) $(BIN)/python -m bench.grant_csv

bench-instructions: $(STAMP)
	scripts/ensure-tools.sh bench
	$(BENCH_ENV) $(BIN)/python -m bench.instructions $(BENCH_ARGS)

bench-grant: $(STAMP)
	$(BENCH_ENV) $(BIN)/python -m bench.grant_csv

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

fmt: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

check: $(STAMP)
	DJANGO_DEBUG=1 $(BIN)/python manage.py check
	DJANGO_DEBUG=1 $(BIN)/python manage.py makemigrations --check --dry-run

clean: stop
	rm -rf $(VENV) var .pytest_cache
