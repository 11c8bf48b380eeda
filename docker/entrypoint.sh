#!/usr/bin/env bash
# Container start-up, as the Inference Endpoints contract has it (docs/compatibility.md, "Loading"):
#
#   1. exactly one of HF_MODEL_ID / HF_MODEL_DIR must be set; both or neither: a message, exit 1;
#   2. HF_MODEL_ID: the repo (HF_REVISION, HF_HUB_TOKEN) is downloaded into the default model
#      directory, which becomes HF_MODEL_DIR for the server (see fetch_model.py);
#   3. MODEL_DIR/requirements.txt, when present, is pip-installed; a failure stops the start, exit 1;
#   4. the server replaces this shell (exec), so SIGTERM from the platform reaches it directly and it
#      drains in-flight requests; it listens on PORT (default 5000).
#
# Knobs beyond the contract, for tests and unusual images:
#   PYTHON                 the interpreter with the toolkit installed (default: python on PATH)
#   HF_DEFAULT_MODEL_DIR   where HF_MODEL_ID is downloaded (default /opt/huggingface/model)
# Arguments are passed on to `hf-remote-vae serve` (for example --host 127.0.0.1).

set -euo pipefail

PYTHON="${PYTHON:-python}"
PORT="${PORT:-5000}"
DEFAULT_MODEL_DIR="${HF_DEFAULT_MODEL_DIR:-/opt/huggingface/model}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

log() { printf 'entrypoint: %s\n' "$*" >&2; }
die() {
    printf 'entrypoint: error: %s\n' "$*" >&2
    exit 1
}

if [[ -n "${HF_MODEL_ID:-}" && -n "${HF_MODEL_DIR:-}" ]]; then
    die "both HF_MODEL_ID (${HF_MODEL_ID}) and HF_MODEL_DIR (${HF_MODEL_DIR}) are set; set exactly one:" \
        "HF_MODEL_DIR=/repository when the platform mounts the model repo," \
        "or HF_MODEL_ID=org/name to download it at start"
fi
if [[ -z "${HF_MODEL_ID:-}" && -z "${HF_MODEL_DIR:-}" ]]; then
    die "neither HF_MODEL_ID nor HF_MODEL_DIR is set; set exactly one:" \
        "HF_MODEL_DIR=/repository (the model repo mounted there, as Inference Endpoints does)" \
        "or HF_MODEL_ID=org/name (downloaded into ${DEFAULT_MODEL_DIR} at start)"
fi

if [[ -n "${HF_MODEL_ID:-}" ]]; then
    model_dir="${DEFAULT_MODEL_DIR}"
    "${PYTHON}" "${HERE}/fetch_model.py" "${HF_MODEL_ID}" "${model_dir}" ||
        die "could not fetch ${HF_MODEL_ID}; the reason is above"
    # the server reads its model directory from here; the download is done, so it will not repeat it
    export HF_MODEL_DIR="${model_dir}"
else
    model_dir="${HF_MODEL_DIR}"
    [[ -d "${model_dir}" ]] ||
        die "HF_MODEL_DIR=${model_dir} is not a directory; mount the model repo there" \
            "(docker run -v \"\$PWD/my-repo:/repository\" -e HF_MODEL_DIR=/repository ...)"
fi

requirements="${model_dir}/requirements.txt"
if [[ -f "${requirements}" ]]; then
    log "installing ${requirements}"
    # no `|| true` on purpose: a handler whose imports are missing would only fail later, less clearly
    status=0
    "${PYTHON}" -m pip install --no-cache-dir --disable-pip-version-check -r "${requirements}" || status=$?
    if [[ ${status} -ne 0 ]]; then
        die "installing ${requirements} failed (pip exit ${status}; pip's error is above)." \
            "Fix the requirement lines, or remove what the image already provides (torch, diffusers, the toolkit)."
    fi
fi

log "starting the server on port ${PORT} with model directory ${model_dir}"
exec "${PYTHON}" -m hf_remote_vae_toolkit serve --model-dir "${model_dir}" --port "${PORT}" "$@"
