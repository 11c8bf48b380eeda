"""Latents on their way into and out of the VAE: scaling rules, Flux unpacking, shape checks.

Layouts: image latents ``[B, C, h, w]``; packed (Flux) latents ``[B, N, 4C]`` with
``N = (height // 16) * (width // 16)``; video latents ``[B, C, T, h, w]``. Values are whatever the
diffusion model produced (roughly unit variance once scaled); no range is assumed.

Every check here looks at shapes and parameters only, so a bad request is refused before any tensor
reaches a device (docs/protocol.md).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import InvalidRequest
from .loading import LoadedVAE

__all__ = [
    "Scaling",
    "SCALING_RULES",
    "resolve_decode_scaling",
    "resolve_encode_scaling",
    "apply_decode_scaling",
    "apply_encode_scaling",
    "packed_grid",
    "unpack_latents",
    "image_latent_shape",
    "check_pixels",
]


@dataclass(frozen=True)
class Scaling:
    """How latents are de-normalised before decode (or normalised after encode).

    ``kind`` is ``"explicit"`` (the request's factors), ``"model"`` (the VAE's config) or ``"none"``.
    ``mean``/``std`` are per-channel (Wan); ``scale``/``shift`` are scalars. Hashable, so it can be
    part of a batch key.
    """

    kind: str
    scale: float | None = None
    shift: float | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None


def _number(params: Mapping[str, Any], key: str) -> float | None:
    value = params.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidRequest(f"{key} must be a number, got {value!r}")
    if key == "scaling_factor" and value == 0:
        raise InvalidRequest("scaling_factor must not be 0")
    return float(value)


def _explicit(params: Mapping[str, Any], loaded: LoadedVAE) -> Scaling | None:
    scale, shift = _number(params, "scaling_factor"), _number(params, "shift_factor")
    if scale is None and shift is None:
        return None
    return Scaling("explicit", scale=scale, shift=shift)


def _model(params: Mapping[str, Any], loaded: LoadedVAE) -> Scaling | None:
    flag = params.get("do_scaling")
    if flag is None:
        return None
    if not isinstance(flag, bool):
        raise InvalidRequest(f"do_scaling must be true or false, got {flag!r}")
    if not flag:
        return None
    if loaded.scaling_factor is None and loaded.latents_mean is not None and loaded.latents_std is not None:
        return Scaling("model", mean=tuple(loaded.latents_mean), std=tuple(loaded.latents_std))
    return Scaling("model", scale=loaded.scaling_factor, shift=loaded.shift_factor)


def _nothing(params: Mapping[str, Any], loaded: LoadedVAE) -> Scaling | None:
    return Scaling("none")


#: docs/protocol.md, in order: the first rule that answers wins.
SCALING_RULES: tuple[Callable[[Mapping[str, Any], LoadedVAE], Scaling | None], ...] = (_explicit, _model, _nothing)


def resolve_decode_scaling(params: Mapping[str, Any], loaded: LoadedVAE) -> Scaling:
    """The scaling a decode request asks for (explicit factors > ``do_scaling`` > none)."""
    for rule in SCALING_RULES:
        found = rule(params, loaded)
        if found is not None:
            return found
    raise AssertionError("the last rule always answers")  # pragma: no cover


def resolve_encode_scaling(params: Mapping[str, Any], loaded: LoadedVAE) -> Scaling:
    """Same rules for encode: explicit factors, else ``do_scaling``, else raw latents."""
    return resolve_decode_scaling(params, loaded)


def _channel_view(values: Sequence[float], z: torch.Tensor) -> torch.Tensor:
    # per-channel statistics broadcast over every dim after the channel dim (works for 4-D and 5-D)
    return torch.tensor(values, dtype=z.dtype, device=z.device).view(1, -1, *([1] * (z.ndim - 2)))


def apply_decode_scaling(z: torch.Tensor, scaling: Scaling) -> torch.Tensor:
    """Latents as the diffusion model left them -> what the decoder takes.

    ``z / scale + shift`` (each only if set), or per channel ``z * std + mean``.
    """
    if scaling.mean is not None and scaling.std is not None:
        return z * _channel_view(scaling.std, z) + _channel_view(scaling.mean, z)
    if scaling.scale is not None:
        z = z / scaling.scale
    if scaling.shift is not None:
        z = z + scaling.shift
    return z


def apply_encode_scaling(z: torch.Tensor, scaling: Scaling) -> torch.Tensor:
    """The inverse, after encode: ``(z - shift) * scale``, or per channel ``(z - mean) / std``."""
    if scaling.mean is not None and scaling.std is not None:
        return (z - _channel_view(scaling.mean, z)) / _channel_view(scaling.std, z)
    if scaling.shift is not None:
        z = z - scaling.shift
    if scaling.scale is not None:
        z = z * scaling.scale
    return z


# --------------------------------------------------------------------------- shapes


def _size(params: Mapping[str, Any], key: str) -> int | None:
    value = params.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise InvalidRequest(f"{key} must be a positive integer (pixels), got {value!r}")
    return value


def packed_grid(height: int, width: int) -> tuple[int, int]:
    """Latent ``(hh, ww)`` of a packed latent for an image of ``height x width`` pixels (2x2 patches)."""
    return 2 * (height // 16), 2 * (width // 16)


def unpack_latents(z: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Packed ``[B, N, 4C]`` -> ``[B, C, hh, ww]`` (Flux's 2x2 patch layout); shape already checked."""
    b, _, packed_c = z.shape
    hh, ww = packed_grid(height, width)
    c = packed_c // 4
    z = z.view(b, hh // 2, ww // 2, c, 2, 2).permute(0, 3, 1, 4, 2, 5)
    return z.reshape(b, c, hh, ww)


def image_latent_shape(
    shape: Sequence[int], params: Mapping[str, Any], loaded: LoadedVAE
) -> tuple[tuple[int, int, int, int], bool]:
    """Check a decode input's shape for an image model; return its 4-D latent shape and whether it is packed.

    Raises ``InvalidRequest`` naming the expected layout for a wrong rank, a wrong channel count, a
    5-D video latent, or a packed length that does not match ``height``/``width``.
    """
    c = loaded.latent_channels
    name = loaded.family.name
    packed_ok = loaded.family.packed
    expected = f"[B, {c}, h, w]" + (
        f" or packed [B, (height//16)*(width//16), {4 * c}] with height and width" if packed_ok else ""
    )
    rank = len(shape)
    if rank == 5:
        raise InvalidRequest(
            f"got a 5-D video latent {list(shape)}, but {name} is an image VAE: send {expected} image latents "
            "(video latents go to a video endpoint such as hunyuanvideo-decode or wan-decode)"
        )
    if rank == 4:
        if shape[1] != c:
            raise InvalidRequest(f"{name} latents have {c} channels: expected {expected}, got {list(shape)}")
        b, _, h, w = shape
        return (b, c, h, w), False
    if rank == 3 and packed_ok:
        b, n, packed_c = shape
        if packed_c != 4 * c:
            raise InvalidRequest(
                f"packed {name} latents have {4 * c} values per token: expected {expected}, got {list(shape)}"
            )
        height, width = _size(params, "height"), _size(params, "width")
        if height is None or width is None:
            raise InvalidRequest(f"packed latents {list(shape)} need the height and width parameters (pixels)")
        hh, ww = packed_grid(height, width)
        if hh == 0 or ww == 0 or n != (hh // 2) * (ww // 2):
            raise InvalidRequest(
                f"packed latents {list(shape)} do not match height={height}, width={width}: that size needs "
                f"[{b}, {(hh // 2) * (ww // 2)}, {4 * c}] ((height//16)*(width//16) tokens)"
            )
        return (b, c, hh, ww), True
    raise InvalidRequest(f"{name} decodes {expected} latents; got a {rank}-D tensor {list(shape)}")


def check_pixels(batch: int, height: int, width: int, max_pixels: int, what: str = "image") -> None:
    """Refuse an output (or input) image over ``max_pixels`` per image, naming the limit."""
    if height * width > max_pixels:
        side = math.isqrt(max_pixels)
        limit = f"{side}x{side}" if side * side == max_pixels else f"{max_pixels} pixels"
        raise InvalidRequest(
            f"{what} of {width}x{height} pixels is over this endpoint's limit of {limit} per image "
            f"({max_pixels} pixels, MAX_PIXELS)"
        )
