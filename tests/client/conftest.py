"""Toy handlers and fixtures for the client tests: the real server on loopback, handlers built in-process."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from hf_remote_vae_toolkit import protocol
from hf_remote_vae_toolkit.contract import RequestInfo, request_parameters
from hf_remote_vae_toolkit.errors import InvalidRequest, NotReady
from hf_remote_vae_toolkit.testing import running_server


def _to_pil(x: torch.Tensor) -> Image.Image:
    """First image of [B, 3, H, W] in [-1, 1] -> PIL (diffusers' rounding)."""
    pixels = (x[0] / 2 + 0.5).clamp(0, 1).permute(1, 2, 0).mul(255).round().to(torch.uint8)
    return Image.fromarray(pixels.numpy())


class _ParseStep:
    """The explicit parse step, as the VAE handlers have it: typed parameters and the negotiated Accept."""

    def parse(self, data: dict[str, Any], request: RequestInfo) -> dict[str, Any]:
        return {**data, "parameters": request_parameters(data, request), "accept": request.accept}

    def call_batch(self, jobs: list[dict[str, Any]]) -> list[Any]:
        return [self(job) for job in jobs]  # type: ignore[operator]


class ToyDecoder(_ParseStep):
    """Speaks the decode protocol (docs/protocol.md) for image latents with a stand-in "VAE".

    ``[B, C, h, w]`` -> ``tanh`` of the first three channels, upsampled 8x: ``[B, 3, 8h, 8w]`` in
    [-1, 1], float32. Applies ``scaling_factor``/``shift_factor``/``do_scaling`` like the real one.
    """

    scaling_factor = 0.5

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def __call__(self, data: dict[str, Any]) -> Any:
        params = data["parameters"]
        self.calls.append(params)
        z = data["inputs"].float()
        if "scaling_factor" in params or "shift_factor" in params:
            z = z / params.get("scaling_factor", 1.0) + params.get("shift_factor", 0.0)
        elif params.get("do_scaling"):
            z = z / self.scaling_factor
        x = torch.tanh(z[:, :3]).repeat_interleave(8, -1).repeat_interleave(8, -2)
        if params.get("output_type", "pil") == "pt":
            if params.get("partial_postprocess"):
                return (x / 2 + 0.5).clamp(0, 1).mul(255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous()
            return x
        if params.get("output_type") == "mp4":
            return b"\x00\x00\x00\x18ftypisom-not-really-a-video"
        if data["accept"] == protocol.TENSOR_BINARY:
            return (x / 2 + 0.5).clamp(0, 1)
        return _to_pil(x)


class ToyEncoder(_ParseStep):
    """Speaks the encode protocol: PIL RGB or a ``[B, 3, H, W]`` tensor -> "latents" ``[B, 4, H/8, W/8]``."""

    def __call__(self, data: dict[str, Any]) -> torch.Tensor:
        inputs, params = data["inputs"], data["parameters"]
        if isinstance(inputs, Image.Image):
            x = torch.from_numpy(np.asarray(inputs.convert("RGB"), dtype=np.float32).copy())
            x = (x.permute(2, 0, 1)[None] / 127.5) - 1
        else:
            x = inputs.float()
        z = x[:, :, ::8, ::8].repeat(1, 2, 1, 1)[:, :4]
        z = (z - params.get("shift_factor", 0.0)) * params.get("scaling_factor", 1.0)
        return z


class Flaky:
    """Answers 503 (``NotReady``) ``failures`` times, then a tensor; counts attempts."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.attempts = 0
        self._lock = threading.Lock()

    def __call__(self, data: dict[str, Any]) -> torch.Tensor:
        with self._lock:
            self.attempts += 1
            if self.attempts <= self.failures:
                raise NotReady(f"warming up (attempt {self.attempts})")
        return data["inputs"] * 2


class Sleepy:
    """Sleeps ``seconds`` before answering (a handler that outlives the client's timeout)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def __call__(self, data: dict[str, Any]) -> torch.Tensor:
        time.sleep(self.seconds)
        return data["inputs"]


class Indexed(_ParseStep):
    """Latents filled with their item index -> that index back, after a delay that makes later
    items finish first; index ``fail_at`` is refused with a 400."""

    def __init__(self, fail_at: int | None = None) -> None:
        self.fail_at = fail_at
        self.order: list[int] = []  # indices in the order the handler ran them

    def parse(self, data: dict[str, Any], request: RequestInfo) -> dict[str, Any]:
        # parse() runs concurrently before the queue: the delay reorders arrivals at the worker
        time.sleep(0.03 * ((7 - int(data["inputs"].flatten()[0].item())) % 4))
        return super().parse(data, request)

    def __call__(self, data: dict[str, Any]) -> torch.Tensor:
        index = int(data["inputs"].flatten()[0].item())
        self.order.append(index)
        if index == self.fail_at:
            raise InvalidRequest(f"item {index} is planted to fail")
        return torch.full((1, 3, 8, 8), float(index))


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def toy_decoder_url() -> Iterator[str]:
    with running_server(handler=ToyDecoder()) as url:
        yield url


@pytest.fixture(scope="module")
def toy_encoder_url() -> Iterator[str]:
    with running_server(handler=ToyEncoder()) as url:
        yield url


@pytest.fixture(scope="session")
def toys() -> SimpleNamespace:
    """The toy handler classes above (test modules cannot import conftest under --import-mode=importlib)."""
    return SimpleNamespace(
        ToyDecoder=ToyDecoder, ToyEncoder=ToyEncoder, Flaky=Flaky, Sleepy=Sleepy, Indexed=Indexed, png_bytes=png_bytes
    )


EMBED_DIM = 16  # the prompt embedding width of the tiny pipelines


@pytest.fixture(scope="session")
def tiny_sd_parts() -> Any:
    """``make(pipeline_class, vae)``: a tiny Stable Diffusion pipeline built from configs (no text
    encoder or tokenizer: tests pass ``prompt_embeds`` of width ``EMBED_DIM``; nothing downloads)."""
    from diffusers import DDIMScheduler, UNet2DConditionModel

    def make(pipeline_class: Any, vae: Any) -> Any:
        torch.manual_seed(0)
        unet = UNet2DConditionModel(
            sample_size=8,
            in_channels=4,
            out_channels=4,
            block_out_channels=(8, 16),
            layers_per_block=1,
            norm_num_groups=4,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=EMBED_DIM,
            attention_head_dim=2,
        ).eval()
        return pipeline_class(
            vae=vae,
            text_encoder=None,
            tokenizer=None,
            unet=unet,
            scheduler=DDIMScheduler(),
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )

    return SimpleNamespace(make=make, embed_dim=EMBED_DIM)


def _serve(model_repo: Callable[[str], Path], name: str) -> Iterator[str]:
    with running_server(model_repo(name)) as url:
        yield url


@pytest.fixture(scope="module")
def sd_decode(model_repo: Callable[[str], Path]) -> Iterator[str]:
    yield from _serve(model_repo, "sd-v1-decode")


@pytest.fixture(scope="module")
def sd_encode(model_repo: Callable[[str], Path]) -> Iterator[str]:
    yield from _serve(model_repo, "sd-v1-encode")


@pytest.fixture(scope="module")
def flux_decode(model_repo: Callable[[str], Path]) -> Iterator[str]:
    yield from _serve(model_repo, "flux-decode")


@pytest.fixture(scope="module")
def video_decode(model_repo: Callable[[str], Path]) -> Iterator[str]:
    yield from _serve(model_repo, "hunyuanvideo-decode")
