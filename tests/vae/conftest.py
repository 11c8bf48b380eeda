"""Fixtures for the image VAE handlers: tiny random-weight model repos, built once per session.

Every repo is made by ``init_repo`` (the same path a user takes) into a session temp dir; the
"local decode" each remote result is compared with loads those weights straight through diffusers.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from hf_remote_vae_toolkit.testing import load_endpoint_handler
from hf_remote_vae_toolkit.vae.families import get_family

IMAGE_FAMILIES = ("sd-v1", "sdxl", "flux")


def load_handler(repo: Path, **kwargs: Any) -> Any:
    """Import ``repo/handler.py`` the way the server does and build ``EndpointHandler(path, **kwargs)``."""
    return load_endpoint_handler(repo, **kwargs)


@pytest.fixture(scope="session")
def local_vae(model_repo: Callable[[str], Path]) -> Callable[[str], Any]:
    """``local_vae("flux")``: the decode repo's weights loaded directly with diffusers, float32, CPU."""
    cache: dict[str, Any] = {}

    def get(family: str) -> Any:
        if family not in cache:
            cls = get_family(family).vae_class()
            cache[family] = cls.from_pretrained(str(model_repo(f"{family}-decode")), torch_dtype=torch.float32).eval()
        return cache[family]

    return get
