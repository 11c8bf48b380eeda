"""Fixtures for the GPU fast path's CPU-side tests: tiny random-weight model repos, built once per session."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from hf_remote_vae_toolkit.vae.repo import init_repo


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
    """Import ``repo/handler.py`` the way the server does and build ``EndpointHandler(path, **kwargs)``."""
    spec = importlib.util.spec_from_file_location(f"fastpath_{repo.name.replace('-', '_')}", repo / "handler.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.EndpointHandler(str(repo), **kwargs)
