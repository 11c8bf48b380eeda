"""Image encode: an image (file or tensor) -> a checked job -> ``vae.encode`` -> latents.

Input: an image Pillow reads (any format, any mode: converted to RGB; alpha is dropped, not
composited) or a tensor ``[B, 3, H, W]`` / ``[3, H, W]`` with values in [0, 1] (uint8: [0, 255]) or
[-1, 1]: as the ``value_range`` parameter says (``0,1`` or ``-1,1``), else recognised, as diffusers'
``VaeImageProcessor`` does, by a negative value.

Sizes not a multiple of 8 are floored by cropping the right and bottom edge (at most 7 pixels):
no resampling, so every kept pixel is the client's own and keeps its coordinates, and
``decode(encode(img))`` lines up with the top-left of ``img``.

Output: latents ``[B, C, H // 8, W // 8]`` (unpacked, also for Flux) in the model dtype: the mode
of the latent distribution, or a sample with ``sample=true`` (``seed`` for a reproducible one),
then ``(z - shift_factor) * scaling_factor`` for the factors the request gives.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from .. import protocol
from ..errors import InvalidRequest, NotAcceptable
from ..media import open_image
from .fastpath import input_format
from .latents import Scaling, apply_encode_scaling, check_pixels, resolve_encode_scaling
from .loading import LoadedVAE

__all__ = ["EncodeJob", "parse_encode", "run_encode", "image_to_tensor"]


@dataclass(frozen=True)
class EncodeJob:
    """One encode request, checked: ``pixels`` is float32 ``[B, 3, H, W]`` in [-1, 1], H and W multiples of 8."""

    pixels: torch.Tensor
    scaling: Scaling
    sample: bool
    seed: int | None

    @property
    def key(self) -> tuple[Any, ...] | None:
        """Deterministic jobs of one image size encode together; sampled ones alone (their noise is per request)."""
        return None if self.sample else (tuple(self.pixels.shape[1:]), self.scaling)


def _floor8(size: int, what: str, multiple: int) -> int:
    if size < multiple:
        raise InvalidRequest(f"image {what} is {size} pixels; encode needs at least {multiple}")
    return size - size % multiple


def image_to_tensor(image: Image.Image, multiple: int = 8) -> torch.Tensor:
    """PIL image (any mode) -> float32 ``[1, 3, H', W']`` in [-1, 1], cropped to multiples of ``multiple``.

    Same arithmetic as ``VaeImageProcessor``: ``x / 255`` in float32, then ``2x - 1``.
    """
    w, h = _floor8(image.width, "width", multiple), _floor8(image.height, "height", multiple)
    if (w, h) != image.size:
        image = image.crop((0, 0, w, h))
    if image.mode in _WIDE_GRAY:
        # 16-bit and float grayscale: Pillow's convert("RGB") would clip every value above 255 to white
        gray = np.asarray(image, dtype=np.float32)
        full = 1.0 if image.mode == "F" and float(gray.max(initial=0.0)) <= 1.0 else _WIDE_GRAY[image.mode]
        unit = np.repeat(np.clip(gray / full, 0.0, 1.0)[..., None], 3, axis=2)
    else:
        rgb = image if image.mode == "RGB" else image.convert("RGB")
        unit = np.asarray(rgb).astype(np.float32) / 255.0
    return torch.from_numpy(2.0 * unit - 1.0).permute(2, 0, 1).unsqueeze(0).contiguous()


#: Grayscale modes wider than 8 bits -> the value of full white (a 16-bit PNG opens as I;16 or I; F: [0, 1] or 0-255)
_WIDE_GRAY = {"I;16": 65535.0, "I;16B": 65535.0, "I;16L": 65535.0, "I": 65535.0, "F": 255.0}


#: ``value_range`` parameter -> whether a float tensor is already in [-1, 1].
VALUE_RANGES = {"0,1": False, "-1,1": True}


def _value_range(params: Mapping[str, Any]) -> bool | None:
    """True/False for an explicit ``value_range`` ([-1, 1] / [0, 1]); None: tell by a negative value."""
    value = params.get("value_range")
    if value is None:
        return None
    key = str(value).replace(" ", "")
    if key not in VALUE_RANGES:
        raise InvalidRequest(f"value_range must be one of {sorted(VALUE_RANGES)}, got {value!r}")
    return VALUE_RANGES[key]


def _tensor_pixels(t: torch.Tensor, multiple: int, signed: bool | None = None) -> torch.Tensor:
    if t.ndim == 3:
        t = t.unsqueeze(0)
    if t.ndim != 4 or t.shape[1] != 3:
        raise InvalidRequest(f"an image tensor must be [B, 3, H, W] (or [3, H, W]), got {list(t.shape)}")
    h, w = _floor8(t.shape[2], "height", multiple), _floor8(t.shape[3], "width", multiple)
    t = t[:, :, :h, :w]
    if t.dtype == torch.uint8:
        return (2.0 * (t.float() / 255.0) - 1.0).contiguous()
    x = t.float()
    if signed is None:  # a bright image in [-1, 1] has no negative value: send value_range to be sure
        signed = bool(x.min() < 0)
    if signed:
        return x.contiguous()
    return (2.0 * x - 1.0).contiguous()


def _seed(params: Mapping[str, Any]) -> int | None:
    value = params.get("seed")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**64:
        raise InvalidRequest(f"seed must be an integer from 0 to 2**64 - 1, got {str(value)[:40]!r}")
    return value


def parse_encode(
    inputs: Any, params: Mapping[str, Any], accept: str | None, loaded: LoadedVAE, max_pixels: int
) -> EncodeJob:
    """Check an encode request (size limit before any conversion); raises ``InvalidRequest``."""
    if accept not in (None, protocol.ANY, protocol.TENSOR_BINARY, protocol.TENSOR_BASE64, protocol.JSON):
        raise NotAcceptable(f"encode answers latents as tensor/binary, not {accept}")
    multiple = loaded.family.spatial_factor
    if isinstance(inputs, (bytes, bytearray, memoryview)):
        inputs = open_image(bytes(inputs))  # the server's reader: decompression bombs are refused
    if isinstance(inputs, Image.Image):
        check_pixels(1, inputs.height, inputs.width, max_pixels, what="input image")
        pixels = image_to_tensor(inputs, multiple)
    elif isinstance(inputs, torch.Tensor):
        if inputs.ndim >= 2:
            check_pixels(1, inputs.shape[-2], inputs.shape[-1], max_pixels, what="input image")
        pixels = _tensor_pixels(inputs, multiple, _value_range(params))
    else:
        raise InvalidRequest(
            "encode expects an image body (PNG, JPEG, ...) or a tensor body with shape and dtype in the query, "
            f"got {type(inputs).__name__}"
        )
    sample = params.get("sample", False)
    if not isinstance(sample, bool):
        raise InvalidRequest(f"sample must be true or false, got {sample!r}")
    return EncodeJob(pixels=pixels, scaling=resolve_encode_scaling(params, loaded), sample=sample, seed=_seed(params))


def run_encode(jobs: list[EncodeJob], loaded: LoadedVAE) -> list[torch.Tensor]:
    """Encode jobs of one key in one call; latents ``[B, C, h, w]`` on the CPU in the model dtype, per job."""
    from .decode import fastpath_for

    x = torch.cat([job.pixels for job in jobs]) if len(jobs) > 1 else jobs[0].pixels
    # pinned, non_blocking, on the worker's copy stream on CUDA; then the layout the weights have
    x = fastpath_for(loaded).to_device(x, loaded.dtype)
    x = input_format(x, loaded.device) if loaded.tuned else x
    with torch.inference_mode():
        dist = loaded.vae.encode(x).latent_dist
        if jobs[0].sample:  # sampled jobs never share a batch
            gen = None
            if jobs[0].seed is not None:
                gen = torch.Generator(device=loaded.device).manual_seed(jobs[0].seed)
            z = dist.sample(generator=gen)
        else:
            z = dist.mode()
        out: list[torch.Tensor] = []
        start = 0
        for job in jobs:
            part = z[start : start + job.pixels.shape[0]].float()
            start += job.pixels.shape[0]
            out.append(apply_encode_scaling(part, job.scaling).to(loaded.dtype).cpu().contiguous())
    return out
