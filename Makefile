# hf-remote-vae-toolkit: every entry point a developer or CI needs.
# `make test` and `make demo` work on a fresh machine: they create .venv and install what they need.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The torch build to install. 2.13.0 is what CI pins; on a GPU host pick the CUDA wheel you want.
TORCH ?= torch==2.13.0
PYTEST_ARGS ?=
MODEL_DIR ?= tests/server/toy_handlers/echo
PORT ?= 5000
IMAGE ?= hf-remote-vae-toolkit
STAMP := $(VENV)/.installed

.PHONY: install test check lint typecheck demo serve bench clean

install: $(STAMP)

$(STAMP): setup.py pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e ".[test,dev,video,bench]"
	touch $(STAMP)

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check src tests benchmarks scripts examples custom_handlers docker docs/examples
	$(BIN)/ruff format --check src tests benchmarks scripts examples custom_handlers docker docs/examples

typecheck: install
	$(BIN)/mypy

check: lint typecheck test

demo: install
	$(BIN)/python scripts/demo.py

serve: install
	HF_MODEL_DIR=$(MODEL_DIR) PORT=$(PORT) $(BIN)/hf-remote-vae serve

bench: install
	$(BIN)/python -m benchmarks.run

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .ruff_cache .mypy_cache demo-out

# Containers (docker/). MODEL_DIR is mounted read-only where Inference Endpoints mounts the model repo.
DOCKER ?= docker
DOCKER_RUN = $(DOCKER) run --rm -p $(PORT):5000 -v "$(abspath $(MODEL_DIR)):/repository:ro" -e HF_MODEL_DIR=/repository

.PHONY: docker-build docker-build-cpu docker-run docker-run-cpu

docker-build:
	$(DOCKER) build -f docker/Dockerfile -t $(IMAGE):gpu .

docker-build-cpu:
	$(DOCKER) build -f docker/Dockerfile.cpu -t $(IMAGE):cpu .

docker-run:
	$(DOCKER_RUN) --gpus all $(IMAGE):gpu

docker-run-cpu:
	$(DOCKER_RUN) $(IMAGE):cpu
