"""Remote VAE nodes for ComfyUI (hf-remote-vae-toolkit). Place or link this folder into ComfyUI/custom_nodes.

The nodes use the toolkit's client library. Installed into ComfyUI's Python it is imported as is; when
this folder is linked from a checkout of the project and the toolkit is not installed, the checkout's
``src/`` is used (its light client needs only requests, Pillow, numpy and tqdm besides ComfyUI's torch).
"""

from __future__ import annotations

import sys
from pathlib import Path

try:
    import hf_remote_vae_toolkit  # noqa: F401
except ImportError:  # linked from a checkout: use its sources
    _SRC = Path(__file__).resolve().parents[2] / "src"
    if (_SRC / "hf_remote_vae_toolkit").is_dir():
        sys.path.insert(0, str(_SRC))

from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
