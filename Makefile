# One command each, on a fresh machine (Python 3.11+, no server to install):
#   make serve   set up .venv and run the server on its embedded default (SQLite in ./data)
#   make test    set up .venv and run the linters and the tests
LISTEN ?= 127.0.0.1:50051
DATA_DIR ?= ./data

.PHONY: setup serve test lint
setup:
	bash scripts/bootstrap

serve: setup
	.venv/bin/checkpoint-server --listen $(LISTEN) --data-dir $(DATA_DIR) --plaintext

lint:
	.venv/bin/ruff check .

test: setup lint
	.venv/bin/python -m pytest -q
