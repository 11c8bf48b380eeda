"""Container start-up step: put the Hub repo ``HF_MODEL_ID`` into the model directory.

Usage (from ``docker/entrypoint.sh``)::

    python fetch_model.py REPO_ID MODEL_DIR

Revision from ``HF_REVISION`` (default ``main``), token from ``HF_HUB_TOKEN`` (or ``HF_TOKEN``).

The repo goes into the Hugging Face cache first (``snapshot_download`` without ``local_dir``): that
one call serves the Hub and, with ``HF_HUB_OFFLINE=1``, a pre-populated cache, which is how the
tests run it. ``MODEL_DIR`` then gets one symlink per file pointing at the cached blob, so the
weights are not stored twice. The work is the server's own ``loader.download_into`` (one
implementation for the container and ``hf-remote-vae serve`` with ``HF_MODEL_ID``). A ``MODEL_DIR`` that already holds files is kept as it is (the
contract downloads only into an empty directory), which makes a restart with a volume cheap.

Exit status: 0 ready, 1 the download failed (one line on stderr says why and what to check).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: fetch_model.py REPO_ID MODEL_DIR", file=sys.stderr)
        return 2
    repo_id, model_dir = argv[0], Path(argv[1])
    revision = os.environ.get("HF_REVISION") or "main"
    token = os.environ.get("HF_HUB_TOKEN") or os.environ.get("HF_TOKEN") or None

    if model_dir.is_dir() and any(model_dir.iterdir()):
        print(f"entrypoint: {model_dir} is not empty; using it as is (no download of {repo_id})", file=sys.stderr)
        return 0

    from hf_remote_vae_toolkit.server.loader import download_into  # the server's own download, one implementation

    print(f"entrypoint: downloading {repo_id}@{revision} into {model_dir}", file=sys.stderr)
    try:
        count = download_into(repo_id, revision, token, model_dir)
    except Exception as exc:
        print(
            f"entrypoint: error: could not download {repo_id}@{revision}: {type(exc).__name__}: {exc}\n"
            "entrypoint: check HF_MODEL_ID and HF_REVISION, network access, and HF_HUB_TOKEN for a private repo",
            file=sys.stderr,
        )
        return 1
    print(f"entrypoint: {count} files of {repo_id} ready in {model_dir}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
