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

.tools/bin/uv:
	python3 -m venv .tools
	.tools/bin/pip install --quiet uv==$(UV_VERSION)

.venv/.synced: pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen
	touch $@

.PHONY: help  ## Show this list of targets
help:
	@grep -E '^\.PHONY: [a-zA-Z_-]+ +## ' $(MAKEFILE_LIST) | \
		awk 'BEGIN {FS = "^\\.PHONY: |  *## "} {printf "  \033[36m%-12s\033[0m %s\n", $$2, $$3}'

.PHONY: install  ## Install the Python dependencies from uv.lock into .venv
install: .venv/.synced

.PHONY: dev  ## Run one API replica with auto-reload, beside its own PostgreSQL and Redis
dev: install
	$(RUN) python -m native.dev

.PHONY: lint  ## ruff (lint and format check) and mypy --strict
lint: install
	$(RUN) ruff check .
	$(RUN) ruff format --check .
	$(RUN) mypy services native

.PHONY: format  ## Apply ruff's fixes and formatting
format: install
	$(RUN) ruff check --fix .
	$(RUN) ruff format .

.PHONY: test  ## Lint, then every test (real PostgreSQL and Redis on free loopback ports)
test: lint
	$(RUN) pytest

.PHONY: clean-dev  ## Remove make dev's database and cache data
clean-dev:
	rm -rf "$$($(RUN) python -c 'from native.paths import data_root; print(data_root() / "dev")')"
