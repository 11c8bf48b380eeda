"""Every knob of the VAE handlers, parsed once and typed: ``VaeConfig.from_env(os.environ)``.

A handler is built by the stock contract as ``EndpointHandler(path)``, on our server or on the stock
toolkit, so it reads its knobs from the environment itself: here, and nowhere else.

=========================  ==========================================================  ==============
variable                   meaning                                                     default
=========================  ==========================================================  ==============
``VAE_DTYPE``              ``float16`` | ``bfloat16`` | ``float32``                    the family's on
                                                                                       CUDA, float32
                                                                                       on a CPU
``MAX_PIXELS``             per image / frame: ``WIDTHxHEIGHT`` or a pixel count        4096x4096
``MAX_FRAMES``             video: most output frames per request                       257
``GPU_MEMORY_BUDGET_GB``   GiB of activations one call may use (tile above it); the    none
                           server's budget replaces it through ``setup``
=========================  ==========================================================  ==============
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["VaeConfig", "DEFAULT_MAX_PIXELS", "DEFAULT_MAX_FRAMES", "parse_max_pixels"]

DEFAULT_MAX_PIXELS = 4096 * 4096
DEFAULT_MAX_FRAMES = 257
GiB = 1024**3
_DTYPES = ("float16", "bfloat16", "float32")


def parse_max_pixels(raw: str | None) -> int:
    """``MAX_PIXELS``: ``"4096x4096"`` or ``"16777216"`` -> pixels per image (unset: 4096x4096)."""
    if raw is None or not raw.strip():
        return DEFAULT_MAX_PIXELS
    text = raw.strip().lower()
    try:
        if "x" in text:
            w, h = text.split("x", 1)
            value = int(w) * int(h)
        else:
            value = int(text)
    except ValueError:
        raise ValueError(f"MAX_PIXELS must be WIDTHxHEIGHT or a pixel count, got {raw!r}") from None
    if value <= 0:
        raise ValueError(f"MAX_PIXELS must be positive, got {raw!r}")
    return value


def _dtype(raw: str | None) -> str | None:
    text = (raw or "").strip().lower()
    if not text:
        return None
    if text not in _DTYPES:
        raise ValueError(f"VAE_DTYPE must be one of {sorted(_DTYPES)}, got {raw!r}")
    return text


def _budget(raw: str | None) -> int | None:
    text = (raw or "").strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"GPU_MEMORY_BUDGET_GB must be a number of GiB, got {raw!r}") from None
    if value < 0:
        raise ValueError(f"GPU_MEMORY_BUDGET_GB must not be negative, got {raw!r}")
    return int(value * GiB)


def _positive_int(raw: str | None, key: str, default: int) -> int:
    text = (raw or "").strip()
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{key} must be a whole number, got {raw!r}") from None
    if value <= 0:
        raise ValueError(f"{key} must be positive, got {raw!r}")
    return value


@dataclass(frozen=True)
class VaeConfig:
    """The handler knobs (see the module docstring)."""

    dtype: str | None = None
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_frames: int = DEFAULT_MAX_FRAMES
    memory_budget_bytes: int | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> VaeConfig:
        env = os.environ if environ is None else environ
        return cls(
            dtype=_dtype(env.get("VAE_DTYPE")),
            max_pixels=parse_max_pixels(env.get("MAX_PIXELS")),
            max_frames=_positive_int(env.get("MAX_FRAMES"), "MAX_FRAMES", DEFAULT_MAX_FRAMES),
            memory_budget_bytes=_budget(env.get("GPU_MEMORY_BUDGET_GB")),
        )
