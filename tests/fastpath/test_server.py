"""The fast path through the real server (uvicorn on loopback, tiny real diffusers VAEs, real clients).

On a CPU the fast path's CUDA parts are off by default; these tests turn its logic on there: results deferred
to the server's thread pool (as on CUDA, where they wait for their device-to-host copy), and a device JPEG
encoder injected where CUDA would find nvJPEG. The responses must not change, and the work must run where it
should.
"""

from __future__ import annotations

import io
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from diffusers.utils.remote_utils import remote_decode as diffusers_remote_decode
from PIL import Image

from hf_remote_vae_toolkit.client import remote_decode
from hf_remote_vae_toolkit.testing import running_server, serving_process
from hf_remote_vae_toolkit.vae.fastpath import FastPath

from .conftest import load_handler

SD_SCALING = 0.18215


def _latents(seed: int = 0, batch: int = 1) -> torch.Tensor:
    return torch.randn(batch, 4, 8, 8, generator=torch.Generator().manual_seed(seed))


class PillowOnDevice:
    """A device JPEG encoder's interface (uint8 ``[3, H, W]`` tensors in, bytes out), encoding with Pillow;
    records the thread each call ran on."""

    def __init__(self) -> None:
        self.threads: list[str] = []

    def __call__(self, images: Sequence[torch.Tensor], quality: int) -> list[bytes]:
        self.threads.append(threading.current_thread().name)
        out = []
        for image in images:
            buf = io.BytesIO()
            Image.fromarray(image.permute(1, 2, 0).numpy()).save(buf, format="JPEG", quality=quality)
            out.append(buf.getvalue())
        return out


@pytest.fixture(scope="module")
def handler(model_repo: Callable[[str], Path]) -> Any:
    return load_handler(model_repo("sd-v1-decode"))


@pytest.fixture
def fast(handler: Any) -> Iterator[Callable[..., PillowOnDevice]]:
    """``fast(defer=...)`` installs a FastPath with an injected device JPEG encoder; restored afterwards."""
    original = handler.loaded.fastpath

    def install(defer: bool) -> PillowOnDevice:
        encoder = PillowOnDevice()
        handler.loaded.fastpath = FastPath(torch.device("cpu"), defer=defer, jpeg=encoder)
        return encoder

    yield install
    handler.loaded.fastpath = original


def _reference(handler: Any, z: torch.Tensor) -> dict[str, Any]:
    """The plain CPU path's answers (no deferral, Pillow JPEG) for the outputs compared below."""
    handler.loaded.fastpath = FastPath(torch.device("cpu"))
    with running_server(handler=handler) as url:
        return {
            "raw": remote_decode(url, z, output_type="pt", return_type="pt", scaling_factor=SD_SCALING),
            "uint8": remote_decode(
                url, z, output_type="pt", partial_postprocess=True, return_type="pt", scaling_factor=SD_SCALING
            ),
            "png": np.asarray(remote_decode(url, z, image_format="png", scaling_factor=SD_SCALING)),
        }


def test_deferred_results_are_the_same_and_wait_off_the_worker(handler: Any, fast: Any) -> None:
    z = _latents(1, batch=2)
    expected = _reference(handler, z)
    encoder = fast(defer=True)
    worker_threads: list[str] = []
    original = handler.call_batch

    def call_batch(jobs: list[Any]) -> list[Any]:
        worker_threads.append(threading.current_thread().name)
        results = original(jobs)
        # what the worker hands back is still pending: nothing was waited for on the worker
        assert all(getattr(r, "finish", None) is not None for r in results)
        return results

    handler.call_batch = call_batch
    try:
        with running_server(handler=handler) as url:
            worker_threads.clear()  # the warm-up's calls ran before the port opened, on the lifespan's thread
            raw = remote_decode(url, z, output_type="pt", return_type="pt", scaling_factor=SD_SCALING)
            uint8 = remote_decode(
                url, z, output_type="pt", partial_postprocess=True, return_type="pt", scaling_factor=SD_SCALING
            )
            png = np.asarray(remote_decode(url, z, image_format="png", scaling_factor=SD_SCALING))
            jpeg = remote_decode(url, z, image_format="jpg", scaling_factor=SD_SCALING)
    finally:
        del handler.call_batch
    assert torch.equal(raw, expected["raw"]) and torch.equal(uint8, expected["uint8"])
    assert np.array_equal(png, expected["png"]) and np.array_equal(png, uint8[0].numpy())
    assert jpeg.size == (64, 64)
    # the device JPEG encode ran in the server's thread pool, not on the GPU worker's thread
    assert len(encoder.threads) == 1 and worker_threads
    assert all(t.startswith("vae-worker") for t in worker_threads)
    assert not encoder.threads[0].startswith("vae-worker")


def test_device_jpeg_bytes_reach_the_diffusers_client(handler: Any, fast: Any) -> None:
    encoder = fast(defer=False)  # a device that finishes in the worker: the encoder runs there
    z = _latents(2)
    with running_server(handler=handler) as url:
        image = diffusers_remote_decode(
            url, z, scaling_factor=SD_SCALING, output_type="pil", image_format="jpg", return_type="pil"
        )
        exact = remote_decode(url, z, output_type="pt", partial_postprocess=True, return_type="pt",
                              scaling_factor=SD_SCALING)  # fmt: skip
    assert len(encoder.threads) == 1 and encoder.threads[0].startswith("vae-worker")
    # the client decoded exactly the bytes the device encoder made from the decoded pixels (q75, the default)
    expected = Image.open(io.BytesIO(PillowOnDevice()([exact[0].permute(2, 0, 1)], 75)[0]))
    assert np.array_equal(np.asarray(image.convert("RGB")), np.asarray(expected.convert("RGB")))


def test_handler_call_resolves_deferred_results(handler: Any, fast: Any) -> None:
    z = _latents(3)
    data = {"inputs": z, "parameters": {"output_type": "pt", "partial_postprocess": True, "scaling_factor": 0.5}}
    handler.loaded.fastpath = FastPath(torch.device("cpu"))
    expected = handler(data)
    fast(defer=True)
    got = handler(data)  # the stock contract: a finished tensor, not a pending Output
    assert isinstance(got, torch.Tensor) and torch.equal(got, expected)


def test_a_wrong_warmup_shape_fails_the_start_up_with_the_expected_layout(model_repo: Callable[[str], Path]) -> None:
    with pytest.raises(ValueError, match=r"none of 1x16x8x8 is a shape .* expected latents \[B, 4, h, w\]"):
        load_handler(model_repo("sd-v1-decode"), environ={"WARMUP_SHAPES": "1x16x8x8"})
    with pytest.raises(ValueError, match=r"1x3x60x64 is not images \[B, 3, H, W\] \(H and W multiples of 8\)"):
        load_handler(model_repo("sd-v1-encode"), environ={"WARMUP_SHAPES": "1x3x60x64"})


def test_one_warmup_list_may_serve_several_families(model_repo: Callable[[str], Path]) -> None:
    shared = {"WARMUP_SHAPES": "1x4x8x8,1x16x8x8,1x16x2x8x8,1x3x64x64"}
    assert load_handler(model_repo("sd-v1-decode"), environ=shared).warmup_shapes == [(1, 4, 8, 8)]
    assert load_handler(model_repo("flux-decode"), environ=shared).warmup_shapes == [(1, 16, 8, 8)]
    assert load_handler(model_repo("sd-v1-encode"), environ=shared).warmup_shapes == [(1, 3, 64, 64)]


def test_warmup_runs_each_shape_in_the_servers_start_up(
    model_repo: Callable[[str], Path], caplog: pytest.LogCaptureFixture
) -> None:
    handler = load_handler(model_repo("sd-v1-decode"), environ={"WARMUP_SHAPES": "1x4x8x8,2x4x12x12"})
    assert handler.warmup_shapes == [(1, 4, 8, 8), (2, 4, 12, 12)]
    with caplog.at_level("INFO", logger="hf_remote_vae_toolkit"), running_server(handler=handler):
        lines = [r.getMessage() for r in caplog.records]
    assert [t["shape"] for t in handler.warmup_times] == [(1, 4, 8, 8), (2, 4, 12, 12)]
    assert all(t["mode"] == "eager" and t["ms"] > 0 for t in handler.warmup_times)
    warm = [line for line in lines if line.startswith("Warm-up")]
    assert [line.split(" on ")[0] for line in warm] == [
        "Warm-up decoder 1x4x8x8",
        "Warm-up decoder 2x4x12x12",
        "Warm-up",
    ], lines
    assert warm[-1].endswith("before the port opens")


@pytest.mark.slow
def test_warmup_shapes_are_logged_with_their_times_before_the_port_opens(model_repo: Callable[[str], Path]) -> None:
    env = {"WARMUP_SHAPES": "1x4x8x8,2x4x16x16", "LOG_LEVEL": "info"}
    with serving_process(model_repo("sd-v1-decode"), env) as (url, proc):
        z = _latents(4)
        assert remote_decode(url, z, output_type="pt", return_type="pt", scaling_factor=SD_SCALING).shape == (
            1, 3, 64, 64
        )  # fmt: skip
        log = Path(proc.log_path).read_text()
    shapes = re.findall(r"Warm-up decoder (\S+) on cpu: \d+ ms \(eager\)", log)
    assert shapes == ["1x4x8x8", "2x4x16x16"], log
    done = re.search(r"Warm-up on cpu done in [\d.]+ ms, before the port opens", log)
    assert done, log
    # uvicorn listens only after the lifespan (and so the warm-up) finished, and says so
    assert 0 <= done.start() < log.find("Application startup complete") < log.find("Uvicorn running on"), log
