"""The image VAE handlers (SD v1, SDXL, Flux): ``EndpointHandler`` bases for ``custom_handlers/``.

A custom handler is one line on top of these::

    class EndpointHandler(ImageDecodeHandler):
        family = "sd-v1"

They keep the stock contract (``EndpointHandler(path)``, ``handler(data)``) and add the optional
methods our scheduler uses (docs/architecture.md): ``validate``, ``batch_key``, ``call_batch``,
``estimate_memory``, ``memory_budget_bytes``, ``warmup``.

Environment (read once, when the handler is built): ``VAE_DTYPE`` (float16 | bfloat16 | float32),
``MAX_PIXELS`` (per image, ``4096x4096`` or a pixel count; default 4096x4096),
``GPU_MEMORY_BUDGET_GB`` (decode tiled above it; unset: the scheduler's budget, or no limit).
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping
from typing import Any

import torch

from .decode import DecodeJob, parse_decode, run_decode
from .encode import EncodeJob, parse_encode, run_encode
from .latents import parse_max_pixels
from .loading import LoadedVAE, load_vae
from .memory import budget_from_env, estimate_decode_bytes, estimate_tiled_decode_bytes
from .parsing import parsed_once

__all__ = ["ImageDecodeHandler", "ImageEncodeHandler"]


class _ImageHandler:
    """Shared set-up: the VAE of ``family`` loaded from ``path``, and the limits from the environment."""

    family: str = ""

    def __init__(
        self, path: str = "", *, device: str | torch.device | None = None, environ: Mapping[str, str] | None = None
    ) -> None:
        if not self.family:
            raise TypeError(f"{type(self).__name__} must set the class attribute `family` (e.g. 'sd-v1')")
        env = os.environ if environ is None else environ
        self.loaded: LoadedVAE = load_vae(path or ".", self.family, device=device, environ=env)
        if self.loaded.family.video:
            raise ValueError(f"{self.loaded.family.name} is a video VAE; image handlers serve sd-v1, sdxl and flux")
        self.max_pixels = parse_max_pixels(env.get("MAX_PIXELS"))
        #: bytes of activations a request may use; the scheduler may set it after warm-up. None: no limit.
        self.memory_budget_bytes: int | None = budget_from_env(env)

    @property
    def itemsize(self) -> int:
        return self.loaded.dtype.itemsize


class ImageDecodeHandler(_ImageHandler):
    """Latents -> images for an image VAE (PROTOCOL.md sections 2, 3, 6)."""

    def _job(self, data: Mapping[str, Any]) -> DecodeJob:
        return parsed_once(data, lambda d: parse_decode(d, self.loaded, self.max_pixels))

    def validate(self, data: Mapping[str, Any]) -> None:
        """Every check that needs no GPU; raises ``InvalidRequest`` (400) naming the expected shape or limit."""
        self._job(data)

    def batch_key(self, data: Mapping[str, Any]) -> Hashable:
        return self._job(data).key

    def _untiled_bytes(self, jobs: list[DecodeJob]) -> int:
        _, _, h, w = jobs[0].shape
        f = self.loaded.family.spatial_factor
        return estimate_decode_bytes(sum(j.shape[0] for j in jobs), h * f, w * f, self.itemsize)

    def _tiled(self, jobs: list[DecodeJob]) -> bool:
        budget = self.memory_budget_bytes
        return budget is not None and self._untiled_bytes(jobs) > budget

    def estimate_memory(self, data: Mapping[str, Any]) -> int:
        """Bytes of GPU activations this request needs as it will run (tiled when over the budget)."""
        job = self._job(data)
        if not self._tiled([job]):
            return self._untiled_bytes([job])
        b, _, h, w = job.shape
        f = self.loaded.family.spatial_factor
        return estimate_tiled_decode_bytes(b, h * f, w * f, self.itemsize, self._tile_pixels())

    def _tile_pixels(self) -> int:
        tile = getattr(self.loaded.vae, "tile_sample_min_size", 512)
        return int(tile[0] if isinstance(tile, (list, tuple)) else tile)

    def call_batch(self, batch: list[Mapping[str, Any]]) -> list[Any]:
        """One ``vae.decode`` over the requests' stacked latents; results in request order."""
        jobs = [self._job(data) for data in batch]
        return run_decode(jobs, self.loaded, tiled=self._tiled(jobs))

    def __call__(self, data: Mapping[str, Any]) -> Any:
        return self.call_batch([data])[0]

    def warmup(self) -> None:
        """One small decode, so the first request pays no lazy initialisation."""
        c = self.loaded.latent_channels
        self({"inputs": torch.zeros(1, c, 8, 8), "parameters": {"output_type": "pt", "partial_postprocess": True}})


class ImageEncodeHandler(_ImageHandler):
    """Images -> latents for an image VAE (PROTOCOL.md section 4)."""

    def _job(self, data: Mapping[str, Any]) -> EncodeJob:
        return parsed_once(data, lambda d: parse_encode(d, self.loaded, self.max_pixels))

    def validate(self, data: Mapping[str, Any]) -> None:
        self._job(data)

    def batch_key(self, data: Mapping[str, Any]) -> Hashable:
        return self._job(data).key

    def estimate_memory(self, data: Mapping[str, Any]) -> int:
        """The encoder's peak is of the decoder's order at the same pixel count; the decode fit serves."""
        b, _, h, w = self._job(data).pixels.shape
        return estimate_decode_bytes(b, h, w, self.itemsize)

    def call_batch(self, batch: list[Mapping[str, Any]]) -> list[Any]:
        return run_encode([self._job(data) for data in batch], self.loaded)

    def __call__(self, data: Mapping[str, Any]) -> Any:
        return self.call_batch([data])[0]

    def warmup(self) -> None:
        self({"inputs": torch.zeros(1, 3, 64, 64), "parameters": {}})
