"""The image VAE handlers (SD v1, SDXL, Flux): ``EndpointHandler`` bases for ``custom_handlers/``.

A custom handler is one line on top of these::

    class EndpointHandler(ImageDecodeHandler):
        family = "sd-v1"

They keep the stock contract (``EndpointHandler(path)``, ``handler(data)``) and add the explicit steps
the scheduler uses (``VaeHandler``): ``parse``, ``batch_key``, ``estimate_memory``, ``call_batch``,
``setup``, ``warmup``. Knobs: ``VaeConfig`` (``VAE_DTYPE``, ``MAX_PIXELS``, ``GPU_MEMORY_BUDGET_GB``).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import torch

from .base import VaeHandler
from .decode import DecodeJob, parse_decode, run_decode
from .encode import EncodeJob, parse_encode, run_encode
from .memory import estimate_decode_bytes, estimate_tiled_decode_bytes

__all__ = ["ImageDecodeHandler", "ImageEncodeHandler"]


class ImageDecodeHandler(VaeHandler):
    """Latents -> images for an image VAE (docs/protocol.md: decode)."""

    def parse_job(self, inputs: Any, params: Mapping[str, Any], accept: str | None) -> DecodeJob:
        return parse_decode(inputs, params, accept, self.loaded, self.config.max_pixels)

    def batch_key(self, job: DecodeJob) -> Hashable:
        return job.key

    def _untiled_bytes(self, jobs: list[DecodeJob]) -> int:
        _, _, h, w = jobs[0].shape
        f = self.loaded.family.spatial_factor
        return estimate_decode_bytes(sum(j.shape[0] for j in jobs), h * f, w * f, self.itemsize)

    def _tiled(self, jobs: list[DecodeJob]) -> bool:
        budget = self.memory_budget_bytes
        return budget is not None and self._untiled_bytes(jobs) > budget

    def estimate_memory(self, job: DecodeJob) -> int:
        """Bytes of GPU activations this request needs as it will run (tiled when over the budget)."""
        if not self._tiled([job]):
            return self._untiled_bytes([job])
        b, _, h, w = job.shape
        f = self.loaded.family.spatial_factor
        return estimate_tiled_decode_bytes(b, h * f, w * f, self.itemsize, self._tile_pixels())

    def _tile_pixels(self) -> int:
        tile = getattr(self.loaded.vae, "tile_sample_min_size", 512)
        return int(tile[0] if isinstance(tile, (list, tuple)) else tile)

    def call_batch(self, jobs: list[DecodeJob]) -> list[Any]:
        """One ``vae.decode`` over the requests' stacked latents; results in request order."""
        return run_decode(jobs, self.loaded, tiled=self._tiled(jobs))

    def warmup(self) -> None:
        c = self.loaded.latent_channels
        self({"inputs": torch.zeros(1, c, 8, 8), "parameters": {"output_type": "pt", "partial_postprocess": True}})


class ImageEncodeHandler(VaeHandler):
    """Images -> latents for an image VAE (docs/protocol.md: encode)."""

    def parse_job(self, inputs: Any, params: Mapping[str, Any], accept: str | None) -> EncodeJob:
        return parse_encode(inputs, params, accept, self.loaded, self.config.max_pixels)

    def batch_key(self, job: EncodeJob) -> Hashable | None:
        return job.key

    def estimate_memory(self, job: EncodeJob) -> int:
        """The encoder's peak is of the decoder's order at the same pixel count; the decode fit serves."""
        b, _, h, w = job.pixels.shape
        return estimate_decode_bytes(b, h, w, self.itemsize)

    def call_batch(self, jobs: list[EncodeJob]) -> list[Any]:
        return run_encode(jobs, self.loaded)

    def warmup(self) -> None:
        self({"inputs": torch.zeros(1, 3, 64, 64)})
