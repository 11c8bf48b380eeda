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
``VAE_COMPILE``            ``auto`` | ``1`` | ``0``: ``torch.compile`` the decoder and   auto: on for
                           encoder for the warmed shapes (``vae/fastpath.py``)          CUDA, off on
                                                                                       a CPU
``WARMUP_SHAPES``          latent shapes (decode) or image shapes (encode) warmed       the family's
                           before the port opens, ``BxCxHxW`` comma-separated (other    512² and 1024²
                           families' shapes in the list are skipped); a compiled        (CUDA), one
                           handler runs any other shape eagerly                        small call
                                                                                       (CPU)
=========================  ==========================================================  ==============
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = [
    "VaeConfig",
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_MAX_FRAMES",
    "parse_max_pixels",
    "parse_compile",
    "parse_warmup_shapes",
]

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


_COMPILE = {"auto": None, "1": True, "true": True, "on": True, "0": False, "false": False, "off": False}


def parse_compile(raw: str | None) -> bool | None:
    """``VAE_COMPILE``: ``auto`` (or unset) -> None (on for CUDA, off on a CPU); ``1``/``0`` force it."""
    text = (raw or "").strip().lower() or "auto"
    if text not in _COMPILE:
        raise ValueError(f"VAE_COMPILE must be auto, 1 or 0, got {raw!r}")
    return _COMPILE[text]


def parse_warmup_shapes(raw: str | None) -> tuple[tuple[int, ...], ...] | None:
    """``WARMUP_SHAPES``: ``"1x4x128x128,1x16x128x128"`` -> ((1, 4, 128, 128), (1, 16, 128, 128)).

    Unset or blank: None (the handler's default). ``none``: no shape at all (only the handler's small call).
    Each shape is 4 (image: ``BxCxHxW``) or 5 (video: ``BxCxFxHxW``) positive whole numbers.
    """
    text = (raw or "").strip().lower()
    if not text:
        return None
    if text == "none":
        return ()
    shapes = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        try:
            dims = tuple(int(d) for d in item.split("x"))
        except ValueError:
            dims = ()
        if len(dims) not in (4, 5) or any(d <= 0 for d in dims):
            raise ValueError(
                f"WARMUP_SHAPES must be comma-separated shapes such as 1x4x128x128 (BxCxHxW, positive), got {item!r}"
            )
        shapes.append(dims)
    return tuple(dict.fromkeys(shapes))


@dataclass(frozen=True)
class VaeConfig:
    """The handler knobs (see the module docstring)."""

    dtype: str | None = None
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_frames: int = DEFAULT_MAX_FRAMES
    memory_budget_bytes: int | None = None
    #: None: compile on CUDA, not on a CPU; True/False: forced
    compile: bool | None = None
    #: None: the handler's default shapes; (): none
    warmup_shapes: tuple[tuple[int, ...], ...] | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> VaeConfig:
        env = os.environ if environ is None else environ
        return cls(
            dtype=_dtype(env.get("VAE_DTYPE")),
            max_pixels=parse_max_pixels(env.get("MAX_PIXELS")),
            max_frames=_positive_int(env.get("MAX_FRAMES"), "MAX_FRAMES", DEFAULT_MAX_FRAMES),
            memory_budget_bytes=_budget(env.get("GPU_MEMORY_BUDGET_GB")),
            compile=parse_compile(env.get("VAE_COMPILE")),
            warmup_shapes=parse_warmup_shapes(env.get("WARMUP_SHAPES")),
        )
