"""Image encoders for responses: PIL image (or uint8 ``[H, W, 3]`` array/tensor) -> file bytes.

The server's codecs and the VAE handlers both encode through these, so an image leaves the service
the same way whichever path produced it. Each takes ``(image, **opts)`` and returns bytes.

PNG speed. Pillow's default PNG (zlib level 6) costs more than the decode it follows (docs/reference-figures.md:
165 ms at 1024² against a 90 ms decode). Measured on this project's CPU at 1024² RGB (best of 3; the
photo is matplotlib's ``grace_hopper.jpg`` resized, the smooth image a synthetic gradient):

=============================  ==================  ==================
setting                        photo               smooth gradient
=============================  ==================  ==================
default (level 6)              316 ms, 1.25 MB     22.6 ms, 0.01 MB
level 1                        61.5 ms, 1.41 MB    17.2 ms, 0.04 MB
level 1, ``Z_RLE``             56.7 ms, 1.34 MB    19.3 ms, 0.15 MB
level 1, ``Z_HUFFMAN_ONLY``    51.1 ms, 1.43 MB    30.4 ms, 0.41 MB
=============================  ==================  ==================

We use level 1 with zlib's default strategy: 5x faster than the default on a photo for 13% more
bytes, and it keeps flat regions small (the Huffman-only strategy, slightly faster on photos, is 10x
larger on smooth images, and a decoded image is often both). Noise compresses to ~3.15 MB whatever
the setting. Lossless either way: the decoded pixels are exactly the input's.
"""

from __future__ import annotations

import io
import warnings
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import InvalidRequest, PayloadTooLarge

__all__ = [
    "ENCODERS",
    "PNG_OPTIONS",
    "encode_jpeg",
    "encode_png",
    "encode_webp",
    "open_image",
    "to_pil",
]

#: The fast lossless PNG setting chosen above (see the module docstring for its cost in size).
PNG_OPTIONS: dict[str, Any] = {"compress_level": 1}


def to_pil(image: Any) -> Image.Image:
    """A PIL image as is, or a uint8 ``[H, W, 3]`` (or ``[H, W]``) numpy array / CPU tensor -> PIL."""
    if isinstance(image, Image.Image):
        return image
    array = image.numpy() if hasattr(image, "numpy") else np.asarray(image)
    if array.dtype != np.uint8:
        raise TypeError(f"expected a uint8 image array, got {array.dtype}")
    return Image.fromarray(array)


def _rgb(image: Any) -> Image.Image:
    pil = to_pil(image)
    # JPEG cannot hold alpha or palettes; PNG could, but our images are RGB and one mode keeps bytes stable.
    return pil if pil.mode in ("RGB", "L") else pil.convert("RGB")


def encode_jpeg(image: Any, quality: int = 75, **opts: Any) -> bytes:
    """JPEG bytes; ``quality`` 1..95 (Pillow's scale; 75 is the protocol's default)."""
    quality = int(quality)
    if not 1 <= quality <= 100:
        raise ValueError(f"jpeg quality must be between 1 and 100, got {quality}")
    buf = io.BytesIO()
    _rgb(image).save(buf, format="JPEG", quality=quality, **opts)
    return buf.getvalue()


def encode_png(image: Any, **opts: Any) -> bytes:
    """Lossless PNG bytes with the fast setting ``PNG_OPTIONS`` (``opts`` override it)."""
    buf = io.BytesIO()
    _rgb(image).save(buf, format="PNG", **{**PNG_OPTIONS, **opts})
    return buf.getvalue()


def encode_webp(image: Any, quality: int = 75, lossless: bool = False, **opts: Any) -> bytes:
    """WebP bytes (lossy at ``quality`` unless ``lossless``); needs Pillow built with WebP."""
    buf = io.BytesIO()
    _rgb(image).save(buf, format="WEBP", quality=int(quality), lossless=bool(lossless), **opts)
    return buf.getvalue()


#: Media type -> encoder, for code that picks by the negotiated ``Accept``.
ENCODERS = {
    "image/jpeg": encode_jpeg,
    "image/png": encode_png,
    "image/webp": encode_webp,
}


#: Formats Pillow reads only by running another program on the data (EPS: Ghostscript). Never opened here.
_EXTERNAL_PROGRAM_FORMATS = frozenset({"EPS"})


def _safe_formats() -> list[str]:
    Image.init()
    return [name for name in Image.OPEN if name not in _EXTERNAL_PROGRAM_FORMATS]


def open_image(body: bytes) -> Image.Image:
    """Image bytes (any format Pillow reads on its own: not EPS, which runs Ghostscript) -> RGB image, as the
    stock toolkit reads an ``image/*`` body.

    Decompression bombs are refused (413) before their pixels are decoded; unreadable bytes are a 400.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(body), formats=_safe_formats())
            image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise PayloadTooLarge(f"image is too large to decode: {exc}") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise InvalidRequest(f"body is not an image Pillow can read: {exc}") from None
    return image.convert("RGB")
