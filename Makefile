# One command each, on a fresh machine (Python 3.11+, no server to install):
#   make serve   set up .venv (the service's dependencies) and run the server on its embedded default (SQLite
#                in ./data)
#   make test    set up .venv (with the test and benchmark extras) and run the linters and the tests
# .venv is set up once and again only when pyproject.toml or scripts/bootstrap change (`make setup` forces it).
LISTEN ?= 127.0.0.1:50051
DATA_DIR ?= ./data

.PHONY: setup serve test lint
setup:
	bash scripts/bootstrap
	touch .venv/.service-ready .venv/.dev-ready

.venv/.service-ready: pyproject.toml scripts/bootstrap
	bash scripts/bootstrap --service
	touch $@

.venv/.dev-ready: pyproject.toml scripts/bootstrap
	bash scripts/bootstrap
	touch $@ .venv/.service-ready

serve: .venv/.service-ready
	.venv/bin/checkpoint-server --listen $(LISTEN) --data-dir $(DATA_DIR) --plaintext

lint: .venv/.dev-ready
	.venv/bin/ruff check .

test: .venv/.dev-ready lint
	.venv/bin/python -m pytest -q -n 2 --dist loadfile
