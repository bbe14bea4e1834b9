.PHONY: setup test e2e demo lint

setup:
	scripts/setup.sh

# The whole test suite, as CI runs it.
test: setup
	PATH="$(CURDIR)/.venv/bin:$$PATH" .venv/bin/python -m pytest

# The end-to-end tests alone: a one-node cluster, images, the chart (README).
e2e: setup
	PATH="$(CURDIR)/.venv/bin:$$PATH" .venv/bin/python -m pytest tests/e2e

# The main job: see the README.
demo: setup
	.venv/bin/driftline demo

lint: setup
	.venv/bin/ruff check .
	.venv/bin/lint-imports

# A local cluster with kind (machines with Docker): see mk/kind.mk.
include mk/kind.mk
