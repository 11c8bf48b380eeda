"""The video handler in-process: limits from the environment, the budget switch, warm-up."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest
import torch

from hf_remote_vae_toolkit.contract import RequestInfo
from hf_remote_vae_toolkit.errors import InvalidRequest

from .conftest import VideoRepo

GiB = 1024**3


def _handler(path: Path, **environ: str) -> Any:
    """``EndpointHandler`` from the repo's own handler.py, the way the server loads it."""
    spec = importlib.util.spec_from_file_location(f"handler_{path.name.replace('-', '_')}", path / "handler.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.EndpointHandler(str(path), environ=environ)


def _data(z: Any, **params: Any) -> dict[str, Any]:
    return {"inputs": z, "parameters": {"output_type": "pt", **params}}


def _parse(handler: Any, data: dict[str, Any]) -> Any:
    return handler.parse(data, RequestInfo(accept="tensor/binary", body_parameters=True))


@pytest.fixture(params=["hunyuanvideo", "wan"])
def repo(request: pytest.FixtureRequest, video_repos: dict[str, VideoRepo]) -> VideoRepo:
    return video_repos[request.param]


def test_max_frames_and_max_pixels_from_the_environment(repo: VideoRepo) -> None:
    handler = _handler(repo.path, MAX_FRAMES="9", MAX_PIXELS=str(64 * 64))
    _parse(handler, _data(torch.zeros(1, 16, 3, 8, 8)))  # 9 frames of 64x64: at both limits
    with pytest.raises(InvalidRequest, match=r"13 frames, over this endpoint's limit of 9 \(MAX_FRAMES\)"):
        _parse(handler, _data(torch.zeros(1, 16, 4, 8, 8)))
    with pytest.raises(InvalidRequest, match="MAX_PIXELS"):
        _parse(handler, _data(torch.zeros(1, 16, 1, 8, 16)))


@pytest.mark.parametrize(
    ("inputs", "needle"),
    [
        ("not a tensor", "tensor/binary body"),
        (torch.zeros(1, 16, 8, 8), "video VAE"),
        (torch.zeros(1, 16, 2, 8, 8, dtype=torch.uint8), "float16, bfloat16 or float32"),
    ],
)
def test_bad_inputs(repo: VideoRepo, inputs: Any, needle: str) -> None:
    with pytest.raises(InvalidRequest, match=needle):
        _parse(_handler(repo.path), _data(inputs))


def test_budget_switches_the_estimate_to_tiled(repo: VideoRepo) -> None:
    big = _data(torch.zeros(1, 16, 2, 40, 40))  # 320x320 frames: over diffusers' 256-pixel tiles
    handler = _handler(repo.path)
    untiled = handler.estimate_memory(_parse(handler, big))
    assert not handler.needs_tiling((1, 16, 2, 40, 40))
    handler.memory_budget_bytes = untiled - 1
    assert handler.needs_tiling((1, 16, 2, 40, 40))
    assert handler.estimate_memory(_parse(handler, big)) < untiled
    handler.memory_budget_bytes = 1024
    assert handler.estimate_memory(_parse(handler, big)) > 1024  # the scheduler answers 413 (test_video_tiling)


def test_budget_from_the_environment_and_warmup(repo: VideoRepo) -> None:
    handler = _handler(repo.path, GPU_MEMORY_BUDGET_GB="1.5")
    assert handler.memory_budget_bytes == int(1.5 * GiB)
    assert handler.batch_key(_parse(handler, _data(torch.zeros(1, 16, 2, 8, 8)))) is None
    handler.warmup()
    outputs = handler.call_batch([_parse(handler, _data(torch.zeros(1, 16, 2, 8, 8)))])
    assert outputs[0].value.shape == (1, 3, 5, 64, 64)


def test_the_stock_call_never_streams(repo: VideoRepo) -> None:
    # handler(data) has no reader for a stream: stream=true there answers the whole result at once
    out = _handler(repo.path)(
        {"inputs": torch.zeros(1, 16, 2, 8, 8), "parameters": {"output_type": "mp4", "stream": True}}
    )
    assert out.stream is None
    assert out.finish(out.value)[4:8] == b"ftyp"
