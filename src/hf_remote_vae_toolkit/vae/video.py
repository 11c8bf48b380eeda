"""The video VAE decode handler (HunyuanVideo, Wan 2.1): 5-D latents in, MP4 or frames out.

Steps, as in every handler here: ``parse`` (shapes, limits, output choice; no GPU work), de-normalise
the latents (docs/protocol.md: scaling), decode (tiled when the memory estimate is over the budget), turn
the decoder output into what was asked for (docs/protocol.md: decode responses):

========================  ===================  ===============================================================
output_type               Accept               body
========================  ===================  ===============================================================
``mp4``                   ``text/plain``       H.264 yuv420p MP4 of the first batch item (``fps``, ``crf``)
``pt``                    ``tensor/binary``    raw decoder output ``[B, 3, F, H, W]``, model dtype, ~[-1, 1]
``pt`` + partial          ``tensor/binary``    uint8 ``[F, H, W, 3]`` of the first item (diffusers' rounding)
``pil``                   ``tensor/binary``    float ``[F, 3, H, W]`` in [0, 1], model dtype, first item
========================  ===================  ===============================================================

``F = (T - 1) * 4 + 1`` frames of ``8h x 8w`` pixels for latents ``[B, C, T, h, w]``.

Knobs (``VaeConfig``): ``MAX_FRAMES`` (default 257), ``MAX_PIXELS`` (per frame, default 4096x4096),
``GPU_MEMORY_BUDGET_GB`` (GiB of activations; unset: no limit, never tile unless the GPU runs out).
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from ..contract import Output
from ..errors import InvalidRequest
from ..protocol import HEADER_TILED, JSON, TENSOR_BASE64, TENSOR_BINARY, TEXT_PLAIN, VIDEO_MP4
from .base import VaeHandler
from .config import DEFAULT_MAX_FRAMES
from .latents import Scaling, apply_decode_scaling, check_pixels, resolve_decode_scaling
from .mp4 import DEFAULT_CRF, encode_mp4
from .postprocess import to_uint8, to_unit
from .video_memory import TileSizes, estimate_video_decode_bytes, num_output_frames
from .video_stream import stream_output, wants_stream

__all__ = ["VideoDecodeHandler", "VideoRequest", "OUTPUTS", "VALID_OUTPUTS", "DEFAULT_MAX_FRAMES"]

#: Accept values a tensor result can be serialised as (None: the client takes anything).
_TENSOR_ACCEPTS = frozenset({None, TENSOR_BINARY, TENSOR_BASE64, JSON})
_MP4_ACCEPTS = frozenset({None, TEXT_PLAIN, VIDEO_MP4})

VALID_OUTPUTS = (
    "output_type=mp4 with Accept text/plain (an MP4 file); "
    "output_type=pt with Accept tensor/binary (raw [B, 3, F, H, W], or uint8 [F, H, W, 3] with "
    "partial_postprocess=true); "
    "output_type=pil with Accept tensor/binary (float frames [F, 3, H, W] in [0, 1]: pass a VideoProcessor "
    "to remote_decode)"
)


@dataclass(frozen=True)
class VideoRequest:
    """A checked decode request. ``latents``: ``[B, C, T, h, w]`` float, on the host, not yet scaled."""

    latents: torch.Tensor
    output: str  # a key of OUTPUTS
    scaling: Scaling
    fps: float
    crf: int
    accept: str | None
    stream: bool = False  # sent as it is decoded (video_stream.py)


# --------------------------------------------------------------------------- outputs
# Each takes the raw decoder output ``[B, 3, F, H, W]`` (model dtype, on the model's device).


def _raw(video: torch.Tensor, req: VideoRequest) -> Any:
    return video


def _uint8_frames(video: torch.Tensor, req: VideoRequest) -> Any:
    return to_uint8(video[0].transpose(0, 1))  # [F, 3, H, W] -> uint8 [F, H, W, 3]


def _unit_frames(video: torch.Tensor, req: VideoRequest) -> Any:
    return to_unit(video[0].transpose(0, 1)).contiguous()  # [F, 3, H, W] in [0, 1], model dtype


def _iter_uint8(video: torch.Tensor) -> Iterator[torch.Tensor]:
    """``[3, F, H, W]`` -> F uint8 ``[H, W, 3]`` frames, converted one at a time on the video's device."""
    for i in range(video.shape[1]):
        yield to_uint8(video[:, i : i + 1].transpose(0, 1))[0]


def _first_item(video: torch.Tensor, req: VideoRequest) -> Any:
    return video[0]


def _mp4(item: torch.Tensor, req: VideoRequest) -> bytes:
    """``[3, F, H, W]`` -> MP4 bytes; runs in the server's thread pool, not on the GPU worker."""
    with torch.inference_mode():
        return encode_mp4(_iter_uint8(item), fps=req.fps, crf=req.crf)


#: Output name -> (builder on the GPU worker, finisher run later off it, or None).
OUTPUTS: dict[str, tuple[Callable[[torch.Tensor, VideoRequest], Any], Callable[[Any, VideoRequest], Any] | None]] = {
    "mp4": (_first_item, _mp4),
    "raw": (_raw, None),
    "uint8": (_uint8_frames, None),
    "unit": (_unit_frames, None),
}


def select_output(params: Mapping[str, Any], accept: str | None) -> str:
    """``output_type`` / ``partial_postprocess`` / Accept -> a key of ``OUTPUTS``; 400 naming the valid ones."""
    output_type = str(params.get("output_type", "pil")).lower()
    partial = params.get("partial_postprocess", False)
    if not isinstance(partial, bool):
        raise InvalidRequest(f"partial_postprocess must be true or false, got {partial!r}")
    if output_type == "mp4" and accept in _MP4_ACCEPTS:
        return "mp4"
    if output_type == "pt" and accept in _TENSOR_ACCEPTS:
        return "uint8" if partial else "raw"
    if output_type == "pil" and accept in _TENSOR_ACCEPTS:
        return "unit"
    why = "a video model returns no single image; " if accept and accept.startswith("image/") else ""
    raise InvalidRequest(
        f"output_type={output_type!r} with Accept {accept or '*/*'} is not a valid combination: {why}"
        f"valid ones are {VALID_OUTPUTS}"
    )


def _number_param(params: Mapping[str, Any], key: str, default: float, low: float, high: float) -> float:
    value = params.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise InvalidRequest(f"{key} must be a number from {low:g} to {high:g}, got {value!r}")
    return value


# --------------------------------------------------------------------------- the handler


class VideoDecodeHandler(VaeHandler):
    """``EndpointHandler(path)`` for a video VAE; subclasses set ``family`` (a key of ``FAMILIES``).

    Tiling sizes default to diffusers' (256 px tiles, 192 px stride, 16-frame HunyuanVideo chunks); a
    subclass may set the ``tile_*`` attributes (pixels / frames) to tile smaller.
    """

    video: ClassVar[bool] = True
    tile_sample_min_size: ClassVar[int | None] = None
    tile_sample_stride: ClassVar[int | None] = None
    tile_sample_min_num_frames: ClassVar[int | None] = None
    tile_sample_stride_num_frames: ClassVar[int | None] = None

    def configure(self) -> None:
        self._configure_tiles()
        self._lock = threading.Lock()  # tiling is a model-wide switch: one decode at a time flips it

    # ----------------------------------------------------------------- setup

    def _configure_tiles(self) -> None:
        vae = self.loaded.vae
        #: older diffusers (0.33, the stock Endpoints image's) have no tiled decode for some video VAEs (Wan)
        self.can_tile = callable(getattr(vae, "enable_tiling", None))
        if not self.can_tile:
            return
        wanted = {
            "tile_sample_min_height": self.tile_sample_min_size,
            "tile_sample_min_width": self.tile_sample_min_size,
            "tile_sample_stride_height": self.tile_sample_stride,
            "tile_sample_stride_width": self.tile_sample_stride,
            "tile_sample_min_num_frames": self.tile_sample_min_num_frames,
            "tile_sample_stride_num_frames": self.tile_sample_stride_num_frames,
        }
        accepted = inspect.signature(vae.enable_tiling).parameters  # Wan has no temporal tiles
        overrides = {k: v for k, v in wanted.items() if v is not None and k in accepted}
        if overrides:
            vae.enable_tiling(**overrides)  # sets the sizes ...
            vae.disable_tiling()  # ... but tiling stays a per-request decision

    def warmup(self) -> None:
        """Decode two latent frames of 8x8 (5 frames of 64x64) so kernels and caches are ready."""
        z = torch.zeros(1, self.loaded.latent_channels, 2, 8, 8)
        self._decode(z, Scaling("none"), tiled=False)

    # ----------------------------------------------------------------- the contract's steps

    def parse_job(self, inputs: Any, params: Mapping[str, Any], accept: str | None) -> VideoRequest:
        """Check a request without touching the GPU; 400 with the valid choices or the limit."""
        output = select_output(params, accept)
        z = inputs
        name = self.loaded.family.name
        channels = self.loaded.latent_channels
        expected = f"[B, {channels}, T, h, w] video latents"
        if not isinstance(z, torch.Tensor):
            raise InvalidRequest(f"{name} decodes {expected}: send them as a tensor/binary body")
        if z.ndim != 5:
            raise InvalidRequest(
                f"{name} is a video VAE and decodes {expected}; got a {z.ndim}-D tensor {list(z.shape)}"
            )
        if z.shape[1] != channels:
            raise InvalidRequest(f"{name} latents have {channels} channels: expected {expected}, got {list(z.shape)}")
        if not z.is_floating_point():
            raise InvalidRequest(f"latents must be float16, bfloat16 or float32, got {z.dtype}")
        frames = num_output_frames(z.shape[2], self.loaded.family.temporal_factor)
        max_frames = self.config.max_frames
        if frames > max_frames:
            raise InvalidRequest(
                f"{z.shape[2]} latent frames decode to {frames} frames, over this endpoint's limit of "
                f"{max_frames} (MAX_FRAMES); send at most {(max_frames - 1) // 4 + 1} latent frames"
            )
        factor = self.loaded.family.spatial_factor
        check_pixels(z.shape[0], z.shape[3] * factor, z.shape[4] * factor, self.config.max_pixels, what="a frame")
        family = self.loaded.family
        fps = _number_param(params, "fps", family.default_fps or 16, 1, 240)
        crf = int(_number_param(params, "crf", DEFAULT_CRF, 0, 51))
        scaling = resolve_decode_scaling(params, self.loaded)
        stream = wants_stream(params, accept, output)
        return VideoRequest(latents=z, output=output, scaling=scaling, fps=fps, crf=crf, accept=accept, stream=stream)

    def batch_key(self, job: VideoRequest) -> None:
        """Never batch: one video already fills a GPU, and batching would multiply the memory a request holds."""
        return None

    def _estimate(self, shape: tuple[int, ...], tiled: bool, streamed: bool = False) -> int:
        tiles = TileSizes.of(self.loaded.vae)
        name = self.loaded.family.name
        return estimate_video_decode_bytes(name, shape, self.itemsize, tiled=tiled, tiles=tiles, streamed=streamed)

    def needs_tiling(self, shape: tuple[int, ...]) -> bool:
        """True when the untiled estimate is over ``memory_budget_bytes``."""
        budget = self.memory_budget_bytes
        return self.can_tile and budget is not None and self._estimate(shape, tiled=False) > budget

    def estimate_memory(self, job: VideoRequest) -> int:
        """Bytes of GPU activations this request needs as it will run (tiled when over the budget)."""
        shape = tuple(job.latents.shape)
        return self._estimate(shape, tiled=self.needs_tiling(shape), streamed=job.stream)

    # ----------------------------------------------------------------- the request

    def call_batch(self, jobs: list[VideoRequest]) -> list[Output]:
        return [self._call_one(req) for req in jobs]

    def _call_one(self, req: VideoRequest) -> Output:
        tiled = self.needs_tiling(tuple(req.latents.shape))
        if req.stream:
            return stream_output(self, req, tiled=tiled)
        video, tiled = self._decode(req.latents, req.scaling, tiled=tiled)
        build, finish = OUTPUTS[req.output]
        with torch.inference_mode():
            value = build(video, req)
        del video
        headers = {HEADER_TILED: "1"} if tiled else {}
        if finish is None:
            return Output(value, headers=headers)
        # x264 takes about a second for 61 frames at 480p on a server CPU: let the worker decode the next
        # request meanwhile.
        return Output(value, headers=headers, media_type=VIDEO_MP4, finish=lambda item: finish(item, req))

    def _decode(self, latents: torch.Tensor, scaling: Scaling, *, tiled: bool) -> tuple[torch.Tensor, bool]:
        """Latents ``[B, C, T, h, w]`` -> raw decoder output ``[B, 3, F, H, W]``, model dtype, on its device.

        Returns the output and whether it ran tiled: an untiled decode that runs out of GPU memory is
        retried once tiled rather than failing the request.
        """
        loaded = self.loaded
        # cast first, then scale, as diffusers' pipelines do before vae.decode
        z = apply_decode_scaling(latents.to(loaded.device, loaded.dtype), scaling)
        try:
            return self._run(z, tiled), tiled
        except torch.cuda.OutOfMemoryError:
            if tiled or not self.can_tile:
                raise
            torch.cuda.empty_cache()
            return self._run(z, True), True

    def _run(self, z: torch.Tensor, tiled: bool) -> torch.Tensor:
        vae = self.loaded.vae
        with self._lock, torch.inference_mode():
            if tiled:
                vae.enable_tiling()  # keeps the sizes set in _configure_tiles
            try:
                return vae.decode(z).sample
            finally:
                if tiled:
                    vae.disable_tiling()
