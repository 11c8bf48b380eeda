"""Tiny random-weight video VAE repos and real servers over them, shared by the video tests.

Each family gets two repos over the same weights: one with the shipped ``custom_handlers/<name>/handler.py``
and one whose handler tiles with 32-pixel tiles (diffusers' 256-pixel default would never tile the tiny
64x64 frames the tests decode).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

from hf_remote_vae_toolkit.testing import running_server
from hf_remote_vae_toolkit.vae.families import FAMILIES

ROOT = Path(__file__).resolve().parents[2]
HANDLER_DIRS = {"hunyuanvideo": "hunyuanvideo-decode", "wan": "wan-decode"}

SMALL_TILES_HANDLER = """
from hf_remote_vae_toolkit.vae.video import VideoDecodeHandler


class EndpointHandler(VideoDecodeHandler):
    family = "{family}"
    tile_sample_min_size = 32
    tile_sample_stride = 24
"""


@dataclass
class VideoRepo:
    family: str
    path: Path  # shipped handler.py
    tiled_path: Path  # same weights, small tiles
    vae: Any  # the same weights loaded locally, float32, for reference decodes

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Local reference: raw ``[B, 3, F, H, W]`` float32."""
        with torch.inference_mode():
            return self.vae.decode(z).sample


def _build(family: str, root: Path) -> VideoRepo:
    fam = FAMILIES[family]
    path = root / HANDLER_DIRS[family]
    fam.build_random("tiny", seed=1).save_pretrained(path)
    shutil.copy(ROOT / "custom_handlers" / HANDLER_DIRS[family] / "handler.py", path / "handler.py")
    tiled = root / f"{HANDLER_DIRS[family]}-small-tiles"
    shutil.copytree(path, tiled)
    (tiled / "handler.py").write_text(SMALL_TILES_HANDLER.format(family=family))
    vae = fam.vae_class().from_pretrained(str(path)).eval()
    return VideoRepo(family=family, path=path, tiled_path=tiled, vae=vae)


@pytest.fixture(scope="session")
def video_repos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, VideoRepo]:
    root = tmp_path_factory.mktemp("video-repos")
    return {family: _build(family, root) for family in HANDLER_DIRS}


@pytest.fixture(scope="module", params=sorted(HANDLER_DIRS))
def served(request: pytest.FixtureRequest, video_repos: dict[str, VideoRepo]) -> Iterator[tuple[str, VideoRepo]]:
    """(base URL, repo) for each family, serving the shipped handler.py."""
    repo = video_repos[request.param]
    with running_server(repo.path) as url:
        yield url, repo
