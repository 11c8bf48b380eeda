"""Fixtures for the image VAE handlers: tiny random-weight model repos, built once per session.

Every repo is made by ``init_repo`` (the same path a user takes) into a session temp dir; the
"local decode" each remote result is compared with loads those weights straight through diffusers.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from hf_remote_vae_toolkit.vae.families import get_family
from hf_remote_vae_toolkit.vae.repo import init_repo

IMAGE_FAMILIES = ("sd-v1", "sdxl", "flux")


@pytest.fixture(scope="session")
def model_repo(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """``model_repo("sd-v1-decode")`` -> a deployable repo with tiny random weights (built once)."""
    built: dict[str, Path] = {}

    def make(name: str) -> Path:
        if name not in built:
            built[name] = init_repo(name, tmp_path_factory.mktemp(name), random_weights="tiny")
        return built[name]

    return make


def load_handler(repo: Path, **kwargs: Any) -> Any:
    """Import ``repo/handler.py`` the way the server does and build ``EndpointHandler(path)``."""
    spec = importlib.util.spec_from_file_location(f"handler_{repo.name.replace('-', '_')}", repo / "handler.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.EndpointHandler(str(repo), **kwargs)


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
