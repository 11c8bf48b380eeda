"""Fixtures for the reliability tests: tiny real model repos and servers on both HTTP parsers."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

# the stress suite lives at the repository root, outside the installed package (as tests/bench does)
ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.stress.servers import Reference, parsers  # noqa: E402

from hf_remote_vae_toolkit.testing import running_server  # noqa: E402
from hf_remote_vae_toolkit.vae.repo import init_repo  # noqa: E402

PARSERS = parsers()


@pytest.fixture(scope="session")
def repos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("reliability-repos")
    return {name: init_repo(name, root / name, random_weights="tiny") for name in ("sd-v1-decode", "sd-v1-encode")}


@pytest.fixture(scope="session")
def reference(repos: dict[str, Path]) -> Reference:
    return Reference(repos["sd-v1-decode"], repos["sd-v1-encode"])


@pytest.fixture(scope="module", params=PARSERS)
def decode_server(request: pytest.FixtureRequest, repos: dict[str, Path]) -> Iterator[str]:
    with running_server(repos["sd-v1-decode"], http=request.param, max_queue_size=8) as url:
        yield url


@pytest.fixture(scope="module", params=PARSERS)
def encode_server(request: pytest.FixtureRequest, repos: dict[str, Path]) -> Iterator[str]:
    with running_server(repos["sd-v1-encode"], http=request.param) as url:
        yield url


@pytest.fixture
def latents() -> Callable[[int], torch.Tensor]:
    def make(seed: int) -> torch.Tensor:
        return torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(seed))

    return make
