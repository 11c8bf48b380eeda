"""Fixtures shared by every test area."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from hf_remote_vae_toolkit.vae.repo import init_repo


@pytest.fixture(scope="session")
def model_repo(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """``model_repo("sd-v1-decode")`` -> a deployable repo (``init-repo``, the path a user takes) with tiny random
    weights of the real diffusers class, built once per session."""
    built: dict[str, Path] = {}

    def make(name: str) -> Path:
        if name not in built:
            built[name] = init_repo(name, tmp_path_factory.mktemp(name), random_weights="tiny")
        return built[name]

    return make
