#!/usr/bin/env bash
# Download the wheels benchmarks/gpu.py needs on a lent GPU machine that its image lacks, into .whl/
# (ignored by git through .git/info/exclude; the device tool carries it). The image already has torch,
# numpy, Pillow, requests, httpx, safetensors, huggingface-hub, prometheus-client, tqdm, matplotlib,
# anyio, h11, click, zipp: only these are missing (and PyAV, for MP4) (importlib_metadata pinned below 9: later ones need one more package).
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qxF '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
mkdir -p .whl
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .whl \
  "diffusers==${DIFFUSERS_VERSION:-0.42.1}" "importlib_metadata==8.7.0" \
  "starlette==${STARLETTE_VERSION:-1.10.0}" "uvicorn==${UVICORN_VERSION:-0.54.0}" \
  "av==${AV_VERSION:-18.1.0}"  # PyAV (with libx264): the MP4 rows of make bench-gpu
ls -la .whl
