"""Fixtures for the GPU fast path's CPU-side tests: tiny random-weight model repos, built once per session."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hf_remote_vae_toolkit.testing import load_endpoint_handler


def load_handler(repo: Path, **kwargs: Any) -> Any:
    """Import ``repo/handler.py`` the way the server does and build ``EndpointHandler(path, **kwargs)``."""
    return load_endpoint_handler(repo, **kwargs)
