SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-print-directory

# uv from PATH, or a private copy installed on first use (Debian's python3 cannot pip-install
# into the system). Python itself comes from the machine: uv must not try to download one.
UV_VERSION := 0.13.9
UV := $(or $(shell command -v uv 2>/dev/null),.tools/bin/uv)
export UV_PYTHON_DOWNLOADS := never
RUN := $(UV) run --frozen

.tools/bin/uv: | system-deps
	python3 -m venv .tools
	.tools/bin/pip install --quiet uv==$(UV_VERSION)

.venv/.synced: pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen
	touch $@

# The project's own Docker engine (make engine), while it runs: every docker command here reaches
# it through these. Recipes see exported variables; $(shell) does not (make 4.3), so it gets them
# spelled out.
ENGINE_ENV := $(if $(wildcard .cache/engine/state.json),$(shell python3 -m stack.engine env))
$(foreach assignment,$(ENGINE_ENV),$(eval export $(assignment)))

# Compose where a Docker engine answers, the native stack (supervisord) otherwise.
STACK ?= $(shell $(ENGINE_ENV) docker info >/dev/null 2>&1 && echo compose || echo native)
# The stack's settings: .env, or the file STACK_ENV_FILE names (the native runner reads the same
# variable), so a second stack (the tests' own) never touches the checkout's. Compose also takes
# COMPOSE_PROJECT_NAME, COMPOSE_FILE and COMPOSE_PROFILES from that file.
ENV_FILE := $(abspath $(or $(STACK_ENV_FILE),.env))
COMPOSE := docker compose $(if $(STACK_ENV_FILE),--env-file $(ENV_FILE))
# down and clean: the services of every profile too (load test, scheduled backups), or their
# stopped containers would outlive the stack.
COMPOSE_ALL := $(COMPOSE) --profile '*'
NATIVE := $(RUN) python -m stack.native
# Seconds `up --wait` gives the started containers to become healthy (Compose counts them from
# the last start; a dependency that turns unhealthy fails `up` sooner), then `make up` shows why.
UP_TIMEOUT ?= 300
# On the project's engine: only the services it has an image for (no registry, no Grafana there).
UP_SERVICES := $(if $(ENGINE_ENV),python3 -m stack.standins services,true)

# After a failed `up`: every service's state, then the last log lines and healthcheck output of
# each one that failed: unhealthy, exited non-zero, restarting or dead; when none did, those still
# starting when UP_TIMEOUT ran out. (Those merely `created` never started because one of these
# failed.) It runs under `set -e`: nothing in it may fail, or the report would stop at the first
# container without a healthcheck.
define COMPOSE_FAILURES
$(COMPOSE) ps -a || true; \
for service in $$($(COMPOSE) ps -a --format '{{.Service}}|{{.State}}|{{.Health}}|{{.ExitCode}}' \
		| awk -F'|' '$$3 == "unhealthy" || ($$2 == "exited" && $$4 != "0") || $$2 == "restarting" || $$2 == "dead" {failed = failed " " $$1} \
			$$2 == "running" && $$3 == "starting" {starting = starting " " $$1} \
			END {print (failed != "" ? failed : starting)}' \
		| tr ' ' '\n' | sort -u); do \
	echo "--- $$service: its last log lines" >&2; $(COMPOSE) logs --no-color --tail=30 $$service >&2 || true; \
	for container in $$($(COMPOSE) ps -a -q $$service); do \
		docker inspect --format '{{if .State.Health}}{{range .State.Health.Log}}healthcheck (exit {{.ExitCode}}): {{.Output}}{{"\n"}}{{end}}{{end}}' \
			$$container | tail -n 3 >&2 || true; \
	done; \
done
endef

# With the `backup` profile on (scheduled backups, docker-compose.yml), the folder they go to is
# made first and yours: a bind mount Docker creates itself would be root's. In a subshell: sourcing
# the settings must not change what the environment hands Compose (which takes precedence).
define BACKUP_FOLDER
(folder="$${BACKUP_DIR:-}"; profiles="$${COMPOSE_PROFILES:-}"; \
if [ -f $(ENV_FILE) ]; then . $(ENV_FILE); fi; folder="$${folder:-$${BACKUP_DIR:-backups}}"; \
case ",$${profiles:-$${COMPOSE_PROFILES:-}}," in *,backup,*) \
	mkdir -p "$$folder" && chmod 700 "$$folder";; esac)
endef

.PHONY: help  ## Show this list of targets
help:
	@grep -E '^\.PHONY: [a-zA-Z_-]+ +## ' $(MAKEFILE_LIST) | \
		awk 'BEGIN {FS = "^\\.PHONY: |  *## "} {printf "  \033[36m%-12s\033[0m %s\n", $$2, $$3}'

.PHONY: system-deps  ## Install the Debian packages the stack runs (as root; otherwise print the apt line)
system-deps:
	bash stack/system-deps.sh

.PHONY: install  ## Install the Python dependencies from uv.lock into .venv
install: .venv/.synced

# STACK=compose with no engine that answers: say what to do, before anything is created.
.PHONY: compose-engine
compose-engine:
ifeq ($(STACK),compose)
	@docker info >/dev/null 2>&1 || { echo "No Docker engine answers. Start Docker, or run" \
		"'make engine' (as root) to start the project's own engine here." >&2; exit 1; }
endif

.PHONY: engine  ## Start the project's own Docker engine if none answers (root), build the test stand-ins
engine:
	python3 -m stack.engine start --standins

.PHONY: engine-stop  ## Stop the project's own Docker engine; no process, bridge, rule or mount is left
engine-stop:
	python3 -m stack.engine stop

# The certificate and key nginx serves over HTTPS (NGINX_TLS_CERT, NGINX_TLS_KEY), or the local
# CA's made once when none is given, checked with the system's python3 and openssl before
# anything starts, whichever runner then starts the stack (stack/tls).
.PHONY: tls  ## Check the HTTPS certificate and key (make one for localhost if none is set)
tls: $(ENV_FILE)
	python3 -m stack.tls check

.PHONY: up  ## Start the whole stack and wait until every service is healthy (STACK=compose|native)
up: compose-engine $(ENV_FILE) tls
ifeq ($(STACK),compose)
	tls_env="$$(python3 -m stack.tls compose-env)"; eval "$$tls_env"; \
	services="$$($(UP_SERVICES))"; \
	$(BACKUP_FOLDER); \
	BACKUP_UID=$$(id -u) BACKUP_GID=$$(id -g) \
		$(COMPOSE) up -d --build --wait --wait-timeout $(UP_TIMEOUT) $$services \
		|| { status=$$?; $(COMPOSE_FAILURES); exit $$status; }
	@. $(ENV_FILE); echo; \
	echo "  API through nginx   http://127.0.0.1:$${NGINX_PORT:-8080}  (docs: /docs; NGINX_HTTP=$${NGINX_HTTP:-serve})"; \
	echo "  API over HTTPS      https://127.0.0.1:$${NGINX_TLS_PORT:-8443}  (HTTP/2)"; \
	if $(COMPOSE) ps --services --status running | grep -qx grafana; then \
	echo "  Grafana             http://127.0.0.1:$${GRAFANA_PORT:-3000}  (anonymous viewer; admin password in .env)"; fi; \
	echo "  Prometheus          http://127.0.0.1:$${PROMETHEUS_PORT:-9090}/targets"; \
	echo "  Alertmanager        http://127.0.0.1:$${ALERTMANAGER_PORT:-9093}"; \
	echo "  (both: user monitoring, password MONITORING_PASSWORD in .env)"
else
	$(MAKE) system-deps install
	$(NATIVE) up
endif

.PHONY: down  ## Stop the stack (data is kept)
down: compose-engine
ifeq ($(STACK),compose)
	$(COMPOSE_ALL) down
else
	$(NATIVE) down
endif

.PHONY: ps  ## Show the stack's services and their state
ps: compose-engine
ifeq ($(STACK),compose)
	$(COMPOSE) ps
else
	$(NATIVE) ps
endif

.PHONY: logs  ## Follow the stack's logs (SERVICE=name for one)
logs: compose-engine
ifeq ($(STACK),compose)
	$(COMPOSE) logs -f --tail=100 $(SERVICE)
else
	$(NATIVE) logs $(SERVICE)
endif

# nginx: the certificate and key are checked first, then `nginx -t`, then a reload (new workers,
# no dropped connection). Prometheus has no HTTP lifecycle endpoint (not even with the monitoring
# password): SIGHUP. Natively the runner renders both configs again first.
.PHONY: reload  ## nginx re-reads its config and certificate, Prometheus services/prometheus
reload: compose-engine $(ENV_FILE) tls
ifeq ($(STACK),compose)
	# nginx -p: the container's own prefix, under which its relative temp paths live (the root
	# file system is read-only), and -t checks them too.
	tls_env="$$(python3 -m stack.tls compose-env)"; eval "$$tls_env"; \
	$(COMPOSE) exec nginx nginx -p /var/cache/nginx/ -t -q && \
		$(COMPOSE) exec nginx nginx -p /var/cache/nginx/ -s reload
	$(COMPOSE) kill -s SIGHUP prometheus
else
	$(NATIVE) reload
endif

.PHONY: scale  ## Compose only: run N API replicas (N=5); nginx finds them by DNS within 5 s
scale: compose-engine
ifeq ($(STACK),compose)
	# No nginx reload: it re-resolves `api` every 5 s by itself (services/nginx/compose/
	# upstream.conf), and a reload closes clients' idle keep-alive connections, so a client's POST
	# racing that close got no answer at all (found under Compose, `make scale N=3` under writes).
	$(COMPOSE) up -d --no-recreate --no-deps --wait --wait-timeout $(UP_TIMEOUT) --scale api=$(N) api
else
	@echo "natively: set API_REPLICAS=$(N) in .env and run make up again"; exit 1
endif

.PHONY: clean  ## Stop the stack and delete its data (database, metrics, logs)
clean: compose-engine
ifeq ($(STACK),compose)
	$(COMPOSE_ALL) down --volumes --remove-orphans
else
	$(NATIVE) clean
endif

# Random secrets on first run; never overwrites one that is already set.
$(ENV_FILE): .env.example
	python3 -m stack.envfile . $(ENV_FILE)

.PHONY: dev  ## Run one API replica with auto-reload, beside its own PostgreSQL and Redis
dev: install
	$(RUN) python -m stack.dev

# Every Python folder of the repository, the same list pre-commit checks.
PY_DIRS := services stack tests loadtest bench

.PHONY: lint  ## ruff (lint and format check) and mypy --strict on every Python folder
lint: install
	$(RUN) ruff check $(PY_DIRS)
	$(RUN) ruff format --check $(PY_DIRS)
	$(RUN) mypy $(PY_DIRS)

.PHONY: format  ## Apply ruff's fixes and formatting
format: install
	$(RUN) ruff check --fix .
	$(RUN) ruff format .

.PHONY: test  ## Lint, then every test: the API, static checks, the whole stack end to end
test: system-deps lint
	bash stack/system-deps.sh wrk
	$(RUN) pytest --ignore=tests/swarm
	$(RUN) pytest tests/swarm

# A session of its own, after the Compose e2e stack and its engine are gone: leaving a swarm has
# cut a Compose network's DNS on a shared engine (docs/testing.md).
.PHONY: test-swarm  ## The one-node Docker Swarm end to end alone (about 3 minutes on the project's engine)
test-swarm: system-deps lint
	bash stack/system-deps.sh wrk
	$(RUN) pytest tests/swarm

.PHONY: test-api  ## The API's own tests only (seconds; a throwaway PostgreSQL and Redis, no stack)
test-api: system-deps install
	$(RUN) pytest services/api/tests

.PHONY: dashboards  ## Regenerate services/grafana/dashboards/*.json from stack/grafana
dashboards: install
	$(RUN) python -m stack.grafana.build

.PHONY: chaos  ## Faults under load against a live native stack (minutes); numbers in tests/chaos/results/
chaos: system-deps install
	CHAOS=1 $(RUN) pytest tests/chaos

# Its own native stack on free ports in a temporary folder, taken down at the end; never part of
# `make test`. The harness stops starting steps after BENCH_BUDGET seconds (default 900); timeout
# is the backstop (SIGTERM unwinds the harness, which takes its stack down).
.PHONY: bench  ## Stack vs its ceilings, on loopback (~8 min; PROFILE=1 adds py-spy); bench/results/
bench: install
	bash stack/system-deps.sh wrk
	PROFILE='$(PROFILE)' timeout --kill-after=30 1020 $(RUN) python -m bench.run

.PHONY: bench-tls  ## What TLS costs: the same GET over HTTP and HTTPS side by side (~6 min)
bench-tls: install
	bash stack/system-deps.sh wrk
	timeout --kill-after=30 900 $(RUN) python -m bench.run --only tls

.PHONY: clean-dev  ## Remove make dev's database and cache data
clean-dev:
	rm -rf "$$($(RUN) python -c 'from stack.paths import data_root; print(data_root() / "dev")')"

# make loadtest USERS=100 DURATION=5m ...: each variable given becomes its LOADTEST_* setting
# (defaults and the other knobs: loadtest/settings.py, loadtest/README.md). HOST is taken from the
# command line, or from the environment only when it is a URL: some shells export HOST as the
# machine's name.
LOADTEST_HOST := $(if $(filter command line,$(origin HOST)),$(HOST),$(filter http://% https://%,$(HOST)))
LOADTEST_ENV := $(strip $(if $(LOADTEST_HOST),LOADTEST_HOST='$(LOADTEST_HOST)') \
	$(if $(USERS),LOADTEST_USERS='$(USERS)') $(if $(SPAWN_RATE),LOADTEST_SPAWN_RATE='$(SPAWN_RATE)') \
	$(if $(DURATION),LOADTEST_DURATION='$(DURATION)') $(if $(WORKERS),LOADTEST_WORKERS='$(WORKERS)'))
# Under Compose each worker container is one client address to nginx, which allows 50 req/s per
# address: more, smaller workers (loadtest/README.md, "Rate limit").
LOADTEST_COMPOSE_WORKERS := $(or $(WORKERS),5)
LOADTEST_COMPOSE := env $(LOADTEST_ENV) LOADTEST_WORKERS=$(LOADTEST_COMPOSE_WORKERS) \
	LOADTEST_UID=$$(id -u) LOADTEST_GID=$$(id -g) $(COMPOSE) --profile loadtest
# --abort-on-container-failure (Compose >= 2.27): a worker that exits 0 when the master tells it
# to quit must not stop the master while it writes the report (--exit-code-from alone implies
# --abort-on-container-exit, which does); a worker that fails still stops the run.
LOADTEST_COMPOSE_UP := up --build --no-deps --scale locust-worker=$(LOADTEST_COMPOSE_WORKERS) \
	--abort-on-container-failure

.PHONY: loadtest  ## Load-test the running stack, judge it by loadtest/thresholds.toml, write a report
loadtest: compose-engine
ifeq ($(STACK),compose)
	mkdir -p loadtest/reports
	$(LOADTEST_COMPOSE) $(LOADTEST_COMPOSE_UP) --exit-code-from locust-master locust-master locust-worker
else
	$(MAKE) install
	env $(LOADTEST_ENV) $(RUN) python -m loadtest run
endif

.PHONY: loadtest-ui  ## Locust's web UI on http://127.0.0.1:8089 against the running stack
loadtest-ui: compose-engine
ifeq ($(STACK),compose)
	mkdir -p loadtest/reports
	LOADTEST_MODE=ui $(LOADTEST_COMPOSE) $(LOADTEST_COMPOSE_UP) locust-master locust-worker
else
	$(MAKE) install
	env $(LOADTEST_ENV) $(RUN) python -m loadtest ui
endif

# Backups of the database (stack/backup): BACKUP_DIR (default backups/, git-ignored) and
# BACKUP_KEEP (default 14) from .env or the command line. STACK says which stack to talk to.
.PHONY: backup  ## Back the database up: backups/app-<UTC time>.dump with a .sha256 beside it
backup: install
	STACK=$(STACK) $(RUN) python -m stack.backup create

.PHONY: restore  ## Restore FILE=backups/app-….dump: checked first, writers stopped, cache cleared
restore: install
	@test -n "$(FILE)" || { echo "usage: make restore FILE=backups/app-<time>.dump"; exit 2; }
	STACK=$(STACK) $(RUN) python -m stack.backup restore "$(FILE)"

# Docker Swarm (docs/swarm.md): the stack file is generated from docker-compose.yml, never kept by
# hand, with nginx's HTTPS files checked and rendered as for `make up` (they become configs and a
# secret). Beside a test's settings file when STACK_ENV_FILE names one, so two stacks never share it.
# On the project's own engine only the services it has images for (no Grafana), and image names
# are not looked up in a registry (it has none).
SWARM_FILE ?= $(if $(STACK_ENV_FILE),$(dir $(ENV_FILE))swarm-stack.yml,.cache/swarm/stack.yml)
SWARM_TIMEOUT ?= 300
SWARM_GENERATE_FLAGS ?= $(if $(ENGINE_ENV),--only-present)
SWARM_RESOLVE_IMAGE ?= $(if $(ENGINE_ENV),never,always)

.PHONY: stack-config  ## Swarm: write the stack file generated from docker-compose.yml, print its path
stack-config: install tls
	tls_env="$$(python3 -m stack.tls compose-env)"; eval "$$tls_env"; \
	$(RUN) python -m stack.swarm.generate $(if $(STACK_ENV_FILE),--env-file $(ENV_FILE)) \
		$(SWARM_GENERATE_FLAGS) --output $(SWARM_FILE)
	@echo "$(SWARM_FILE)"

.PHONY: stack-image  ## Swarm: build the API image the stack runs (more than one node: push it, docs/swarm.md)
stack-image: $(ENV_FILE) tls
	tls_env="$$(python3 -m stack.tls compose-env)"; eval "$$tls_env"; $(COMPOSE) build api

# The image first: `docker stack deploy` builds nothing, and stack-config on the project's engine
# leaves out a service whose image is absent.
.PHONY: stack-deploy  ## Swarm: deploy it on this swarm (labels a one-node swarm) and wait until it converges
stack-deploy: stack-image stack-config $(ENV_FILE)
	$(RUN) python -m stack.swarm.deploy up --file $(SWARM_FILE) --env-file $(ENV_FILE) \
		--timeout $(SWARM_TIMEOUT) --resolve-image $(SWARM_RESOLVE_IMAGE)

.PHONY: stack-rm  ## Swarm: remove the stack (its volumes stay; VOLUMES=1 removes them too)
stack-rm: install
	$(RUN) python -m stack.swarm.deploy rm --env-file $(ENV_FILE) $(if $(VOLUMES),--volumes)
