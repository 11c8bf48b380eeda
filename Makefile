# hf-remote-vae-toolkit: every entry point a developer or CI needs.
# `make test` and `make demo` work on a fresh machine: they create .venv and install what they need.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The torch build to install. 2.13.0 is what CI pins; on a GPU host pick the CUDA wheel you want.
TORCH ?= torch==2.13.0
# TORCH_CPU=1 installs torch's CPU-only wheel (about 190 MB) from TORCH_CPU_INDEX; TORCH_CPU=0 the default
# wheel, which on Linux is the CUDA build plus about 3 GB of nvidia-* packages that the demo and the tests
# never use. Default: 1 unless this machine has an NVIDIA driver (nvidia-smi). When TORCH_CPU_INDEX cannot
# be reached, the install says so and takes torch from the default index.
TORCH_CPU ?= $(if $(shell command -v nvidia-smi 2>/dev/null),0,1)
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
PYTEST_ARGS ?=
MODEL_DIR ?= tests/server/toy_handlers/echo
PORT ?= 5000
IMAGE ?= hf-remote-vae-toolkit
STAMP := $(VENV)/.installed
, := ,

.PHONY: install test test-slow test-all ci check lint typecheck demo serve bench clean

install: $(STAMP)

$(STAMP): setup.py pyproject.toml
	@echo "make: installing into $(VENV): torch ($(if $(filter 1,$(TORCH_CPU)),CPU-only wheel$(,) about 190 MB,default wheel$(,) several GB with CUDA)), diffusers, the server and the test tools."
	@echo "make: about 1.6 GB on disk; 2-5 minutes on a fast connection (once: later runs reuse $(VENV))."
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	@set -e; extra=""; \
	if [ "$(TORCH_CPU)" = 1 ]; then \
	  if $(BIN)/python -c "import urllib.request; urllib.request.urlopen('$(TORCH_CPU_INDEX)/torch/', timeout=5)" 2>/dev/null; then \
	    extra="--extra-index-url $(TORCH_CPU_INDEX)"; \
	  else echo "make: $(TORCH_CPU_INDEX) cannot be reached; torch comes from the default index"; fi; \
	fi; \
	echo "$(BIN)/pip install $$extra \"$(TORCH)\"   (the largest download)"; \
	$(BIN)/pip install --progress-bar on $$extra "$(TORCH)"
	@echo "make: now the project and the rest (diffusers, transformers, PyAV, pytest, ruff, mypy...): about 0.8 GB, 1-3 minutes"
	$(BIN)/pip install --quiet -e ".[server,test,dev,video,bench]"
	touch $(STAMP)
	@echo "make: done. Put the commands on your PATH with: source $(VENV)/bin/activate"

# Test tiers. `make test`: the default tier, everything not marked slow (unit tests, then real servers on
# loopback with tiny VAEs); a few minutes on 2 cores. `make test-all`: every tier, slow ones included (the
# benchmark scripts, the real stock toolkit side by side, Ray Serve on a local cluster, the light client in a
# fresh venv, torch.compile); `make test-slow` the slow ones alone, after building what they need (.venv-stock,
# the ray extra).
# `make ci` is what .ci/run runs: lint, type checks, every test tier and the stress suite at small counts.
test: install
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

test-slow: install install-ray stock-venv
	REQUIRE_STOCK=1 STOCK_VENV=$(STOCK_VENV) $(BIN)/python -m pytest -m slow $(PYTEST_ARGS)

test-all: test test-slow

ci: lint typecheck test test-slow stress

LINTED := src tests benchmarks scripts examples custom_handlers docker docs/examples integrations

lint: install
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)

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

# The real stock toolkit (huggingface-inference-toolkit 0.5.6, the version the stock Endpoints image runs) in
# its own venv, for tests/stock and `make bench-stock`. Its wheel and pins live in $(STOCK_WHEELS); the wheel
# goes in with --no-deps (its metadata names a git dependency that cannot be installed here).
STOCK_WHEELS ?= ../shared/wheels
STOCK_VENV ?= .venv-stock
STOCK_STAMP := $(STOCK_VENV)/.installed

.PHONY: stock-venv test-stock bench-stock

stock-venv: $(STOCK_STAMP)

$(STOCK_STAMP): $(STOCK_WHEELS)/stock-toolkit-requirements.txt
	test -x $(STOCK_VENV)/bin/python || $(PYTHON) -m venv $(STOCK_VENV)
	$(STOCK_VENV)/bin/pip install --quiet --upgrade pip
	@set -e; extra=""; \
	if [ "$(TORCH_CPU)" = 1 ] && $(STOCK_VENV)/bin/python -c "import urllib.request; urllib.request.urlopen('$(TORCH_CPU_INDEX)/torch/', timeout=5)" 2>/dev/null; then \
	  extra="--extra-index-url $(TORCH_CPU_INDEX)"; \
	fi; \
	echo "$(STOCK_VENV)/bin/pip install $$extra \"$(TORCH)\" -r $(STOCK_WHEELS)/stock-toolkit-requirements.txt"; \
	$(STOCK_VENV)/bin/pip install --quiet $$extra "$(TORCH)" -r $(STOCK_WHEELS)/stock-toolkit-requirements.txt
	$(STOCK_VENV)/bin/pip install --quiet --no-deps $(STOCK_WHEELS)/huggingface_inference_toolkit-0.5.6-py3-none-any.whl
	$(STOCK_VENV)/bin/python -c "import huggingface_inference_toolkit.webservice_starlette"
	touch $(STOCK_STAMP)

# The stock-fidelity tests (tests/stock) with the stock toolkit required: a missing .venv-stock is an error here.
test-stock: install stock-venv
	REQUIRE_STOCK=1 STOCK_VENV=$(STOCK_VENV) $(BIN)/python -m pytest tests/stock $(PYTEST_ARGS)

# Per-request overhead against the stock toolkit (a do-nothing handler, JSON and 1 MiB bodies, concurrency 1
# and 8, interleaved; ~70 s). Writes benchmarks/results/stock-overhead-<date>.md and .json.
bench-stock: install stock-venv
	STOCK_VENV=$(STOCK_VENV) $(BIN)/python -m benchmarks.stock_overhead

# The preview tier (TAESD-class decoders) against the full VAEs on this machine's CPU: decode time, peak memory,
# and the HTTP round trip (~3 min). Writes benchmarks/results/preview-cpu-<date>.md and .json. On a GPU:
# $(BIN)/python -m benchmarks.preview --device cuda --http
bench-preview: install
	$(BIN)/python -m benchmarks.preview --http

# The ComfyUI node pack and the preview tier's tests (also part of `make test`).
test-comfyui: install
	$(BIN)/python -m pytest tests/integrations tests/preview $(PYTEST_ARGS)

# Ray Serve scale-out (docs/scale-out.md): the ray extra into .venv, its tests (tests/scale: the ones on a local
# Ray cluster are marked slow, ~4 min on 2 cores; without the extra they all skip), and the benchmark
# (~5 min; writes benchmarks/results/ray-scale-<date>.md and .json).
install-ray: install
	$(BIN)/pip install --quiet -e ".[ray]"

test-ray: install-ray
	$(BIN)/python -m pytest tests/scale $(PYTEST_ARGS)

bench-ray: install-ray
	$(BIN)/python -m benchmarks.ray_scale

# The first hour of a new user (tests/firsthour, slow ones included): README blocks run as printed, the curl
# and JavaScript decodes of docs/endpoints.md (node 18+; skipped with a reason without it), the light client
# in a fresh venv, the CLI's one-line errors.
.PHONY: test-firsthour

test-firsthour: install
	$(BIN)/python -m pytest tests/firsthour tests/client/test_client_dropin.py $(PYTEST_ARGS)

# The GPU fast path, measured: one prepared run (benchmarks/gpu_fast.py, under 8 minutes on an H100/H200):
# eager vs compiled decode per family at 512/1024/2048, GPU vs CPU JPEG, HTTP vs in-process per output type,
# HunyuanVideo/Wan raw vs MP4, batching at concurrency 1/4/16, client peak memory; each target next to its
# value. Writes benchmarks/results/gpu-fast-<gpu>-<date>.md (or into $OUT). Needs no install step, so it runs
# as is on a lent GPU machine (its python3, PYTHONPATH with the carried wheels: benchmarks/README.md).
# BENCH_GPU_ARGS=--dry-run: every step at tiny size on the CPU (tests/fastpath runs it).
BENCH_PYTHON ?= $(if $(wildcard $(BIN)/python),$(BIN)/python,$(PYTHON))
BENCH_GPU_ARGS ?=

.PHONY: bench-gpu

bench-gpu:
	PYTHONPATH="$(CURDIR)/src:$(CURDIR)$${PYTHONPATH:+:$$PYTHONPATH}" PYTHONUNBUFFERED=1 $(BENCH_PYTHON) -m benchmarks.gpu_fast $(BENCH_GPU_ARGS)

# The stress suite (benchmarks/stress): a fuzzer of malformed requests, a burst of 10x the queue, a soak
# whose every answer is checked against a local decode, slow bodies, idle connections, disconnects, worker
# faults, SIGTERM under load and API_TOKEN checks, against real servers on both HTTP parsers. `make stress`
# runs small counts (a few minutes on 2 cores); `make stress-full` the issue's (10,000 fuzzed, 10,000 soak).
# STRESS_ARGS adds options (--fuzz N --soak N --parsers h11). Report: benchmarks/results/stress-DATE*.md.
STRESS_ARGS ?=

.PHONY: stress stress-full test-reliability

stress: install
	$(BIN)/python -m benchmarks.stress $(STRESS_ARGS)

stress-full: install
	$(BIN)/python -m benchmarks.stress --full $(STRESS_ARGS)

test-reliability: install
	$(BIN)/python -m pytest tests/reliability $(PYTEST_ARGS)

.PHONY: bench-video-stream test-video-stream

# Streamed video decode (issue 17): time to first byte, server peak RSS for 41 vs 161 frames, streamed frames
# against the one-shot decode; tiny Wan on the CPU, a few minutes (--device cuda --size full on a GPU).
bench-video-stream: install
	$(BIN)/python -m benchmarks.video_stream

# The streamed video tests (also part of `make test`; the slow ones in `make test-all`).
test-video-stream: install
	$(BIN)/python -m pytest tests/video/test_video_stream.py $(PYTEST_ARGS)
