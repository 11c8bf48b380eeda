"""The image VAE handlers (SD v1, SDXL, Flux): ``EndpointHandler`` bases for ``custom_handlers/``.

A custom handler is one line on top of these::

    class EndpointHandler(ImageDecodeHandler):
        family = "sd-v1"

They keep the stock contract (``EndpointHandler(path)``, ``handler(data)``) and add the explicit steps
the scheduler uses (``VaeHandler``): ``parse``, ``batch_key``, ``estimate_memory``, ``call_batch``,
``setup``, ``warmup``. Knobs: ``VaeConfig`` (``VAE_DTYPE``, ``MAX_PIXELS``, ``GPU_MEMORY_BUDGET_GB``,
``VAE_COMPILE``, ``WARMUP_SHAPES``).

Warm-up (before the port opens): one call per warmed shape (``WARMUP_SHAPES``, else the family's 512² and
1024² on CUDA or when compiling, else one small call). With ``VAE_COMPILE`` on, those calls compile the
decoder (encoder) for exactly those shapes; any other shape runs eagerly (``fastpath.py`` says why).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Hashable, Iterator, Mapping
from typing import Any

import torch

from ..contract import RequestInfo
from .base import VaeHandler
from .config import VaeConfig
from .decode import DecodeJob, parse_decode, resolve, run_decode
from .encode import EncodeJob, parse_encode, run_encode
from .fastpath import use_compile
from .loading import compile_vae
from .memory import estimate_decode_bytes, estimate_tiled_decode_bytes

__all__ = ["ImageDecodeHandler", "ImageEncodeHandler", "default_warmup_shapes"]

log = logging.getLogger("hf_remote_vae_toolkit")

#: Output sizes warmed by default on CUDA (or when compiling): 512² and 1024², one image.
DEFAULT_WARM_PIXELS = (512, 1024)


def default_warmup_shapes(channels: int, factor: int, full: bool, *, latent: bool = True) -> list[tuple[int, ...]]:
    """Latent (``latent``) or image shapes warmed when ``WARMUP_SHAPES`` is unset: 512² and 1024² when ``full``
    (CUDA, or compiling), else one small call (64² pixels)."""
    sizes = DEFAULT_WARM_PIXELS if full else (8 * factor,)
    if latent:
        return [(1, channels, s // factor, s // factor) for s in sizes]
    return [(1, 3, s, s) for s in sizes]


class _Warming:
    """What warm-up shares: the shapes, compiling them, the per-shape log."""

    config: VaeConfig
    loaded: Any

    def _compiling(self, part: str) -> bool:
        return part in self.loaded.compiled

    def _shapes(self, latent: bool) -> list[tuple[int, ...]]:
        """The shapes to warm. One ``WARMUP_SHAPES`` may list several families' shapes (one environment for
        many endpoints): shapes with another channel count or rank are skipped, and it is an error only when
        none is this handler's, or when one of its own is malformed."""
        configured = self.config.warmup_shapes
        c = self.loaded.latent_channels if latent else 3
        f = self.loaded.family.spatial_factor
        if configured is None:
            full = self.loaded.device.type == "cuda" or bool(self.loaded.compiled)
            return default_warmup_shapes(c, f, full, latent=latent)
        what = f"latents [B, {c}, h, w]" if latent else f"images [B, 3, H, W] (H and W multiples of {f})"
        own: list[tuple[int, ...]] = [shape for shape in configured if len(shape) == 4 and shape[1] == c]
        for shape in own:
            if not latent and (shape[2] % f or shape[3] % f):
                raise ValueError(f"WARMUP_SHAPES: {'x'.join(map(str, shape))} is not {what}")
        if configured and not own:
            listed = ",".join("x".join(map(str, shape)) for shape in configured)
            raise ValueError(
                f"WARMUP_SHAPES: none of {listed} is a shape {type(self).__name__} for {self.loaded.family.name} "
                f"serves: expected {what}"
            )
        skipped = [shape for shape in configured if shape not in own]
        if skipped:
            log.info("WARMUP_SHAPES: %s not for %s (%s), skipped", skipped, self.loaded.family.name, what)
        return own

    @contextlib.contextmanager
    def _admitting(self, part: str) -> Iterator[None]:
        compiled = self.loaded.compiled.get(part)
        with compiled.admitting() if compiled is not None else contextlib.nullcontext():
            yield

    def _warm(self, part: str, shapes: list[tuple[int, ...]], call: Any) -> None:
        """``call(shape)`` once per shape (compiling it when ``part`` is compiled), each logged with its time."""
        self.warmup_times: list[dict[str, Any]] = []
        mode = "compiled" if self._compiling(part) else "eager"
        for shape in shapes:
            started = time.perf_counter()
            with self._admitting(part):
                call(shape)
            if self.loaded.device.type == "cuda":
                torch.cuda.synchronize(self.loaded.device)
            ms = (time.perf_counter() - started) * 1000
            self.warmup_times.append({"shape": shape, "ms": round(ms, 1), "mode": mode})
            log.info("Warm-up %s %s on %s: %.0f ms (%s)", part, "x".join(map(str, shape)), self.loaded.device, ms, mode)


class ImageDecodeHandler(_Warming, VaeHandler):
    """Latents -> images for an image VAE (docs/protocol.md: decode)."""

    def __init__(self, path: str = "", **kwargs: Any) -> None:
        super().__init__(path, **kwargs)
        if use_compile(self.config.compile, self.loaded.device):
            compile_vae(self.loaded, ("decoder",))
        self.warmup_shapes = self._shapes(latent=True)  # a bad WARMUP_SHAPES fails here, at start-up

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
        """One ``vae.decode`` over the requests' stacked latents; results in request order (on CUDA, each
        result's copy to the host is still in flight: its ``Output.finish`` waits for it)."""
        return run_decode(jobs, self.loaded, tiled=self._tiled(jobs))

    def __call__(self, data: dict[str, Any]) -> Any:
        """The stock contract: one request, its result finished (device work waited for)."""
        return resolve(super().__call__(data))

    def warmup(self) -> None:
        """One decode per warmed latent shape (uint8 output: postprocess and copy included)."""
        query = {"output_type": "pt", "partial_postprocess": True}

        def call(shape: tuple[int, ...]) -> None:
            job = self.parse({"inputs": torch.zeros(shape)}, RequestInfo(query=query))
            resolve(self.call_batch([job])[0])

        self._warm("decoder", self.warmup_shapes, call)


class ImageEncodeHandler(_Warming, VaeHandler):
    """Images -> latents for an image VAE (docs/protocol.md: encode)."""

    def __init__(self, path: str = "", **kwargs: Any) -> None:
        super().__init__(path, **kwargs)
        if use_compile(self.config.compile, self.loaded.device):
            compile_vae(self.loaded, ("encoder",))
        self.warmup_shapes = self._shapes(latent=False)

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
        """One encode per warmed image shape."""

        def call(shape: tuple[int, ...]) -> None:
            self.call_batch([self.parse({"inputs": torch.zeros(shape)}, RequestInfo())])

        self._warm("encoder", self.warmup_shapes, call)
