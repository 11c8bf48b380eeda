"""Section 4: what encoding the output costs, against the decode it follows.

Each encoder runs on a decoded image of the benchmark's VAE (random weights: structured noise) and on
a smooth synthetic image (gradients and shapes, closer to a photograph for a compressor); the two
bracket what real images cost. The decode times beside them are this machine's decode of the same
size and the H100 figures of docs/reference-figures.md, where the encode would run on the server's CPU after a
GPU decode.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from hf_remote_vae_toolkit import media

from .common import median_ms
from .outputs import OUTPUT_TYPES

__all__ = ["run_encoding", "ANCHOR_DECODE_MS", "ENCODERS"]

#: SD v1 fp16 eager decode on one H100 (docs/reference-figures.md, "Raw decode").
ANCHOR_DECODE_MS = {512: 22.0, 1024: 90.0, 2048: 421.0}

ENCODERS: dict[str, Callable[[Any], bytes]] = {
    "jpeg q75": lambda im: media.encode_jpeg(im, quality=75),
    # Named from the live setting, which media.py's owners tune.
    "png ours (" + ", ".join(f"{k}={v}" for k, v in media.PNG_OPTIONS.items()) + ")": media.encode_png,
    "png default (L6)": lambda im: _pillow_default_png(im),
    "webp q75": lambda im: media.encode_webp(im, quality=75),
}


def _pillow_default_png(image: Any) -> bytes:
    """Pillow's own PNG defaults, what a server without our setting sends (the reference's)."""
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def _smooth_image(size: int) -> np.ndarray:
    """Gradients plus a few flat discs: a stand-in for a photograph's large smooth regions."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    rgb = np.stack([x, y, 0.5 + 0.5 * np.sin(6 * x + 3 * y)], axis=-1)
    for cx, cy, r, colour in ((0.3, 0.3, 0.15, (0.9, 0.2, 0.1)), (0.7, 0.6, 0.2, (0.1, 0.4, 0.8))):
        rgb[(x - cx) ** 2 + (y - cy) ** 2 < r * r] = colour
    return (rgb * 255).round().astype(np.uint8)


def _decoded_image(handler: Any, size: int) -> tuple[np.ndarray, float]:
    latents = torch.randn(1, 4, size // 8, size // 8, generator=torch.Generator().manual_seed(size)).half()
    image: list[Any] = []
    decode_ms = median_ms(lambda: image.append(OUTPUT_TYPES["uint8 tensor"].run(handler, latents)), repeats=3)
    return image[-1][0].numpy(), decode_ms


def run_encoding(handler: Any, sizes: list[int], repeats: int, log: Any) -> list[dict[str, Any]]:
    """Rows of ``{size, content, encoder, encode_ms, bytes, vs_cpu_decode, vs_h100_decode}``."""
    rows = []
    for size in sizes:
        decoded, decode_ms = _decoded_image(handler, size)
        for content, image in (("decoded (random weights)", decoded), ("smooth synthetic", _smooth_image(size))):
            pil = media.to_pil(image)
            for name, encode in ENCODERS.items():
                try:
                    nbytes = len(encode(pil))
                except (OSError, KeyError) as exc:  # Pillow built without WebP
                    log({"size": size, "encoder": name, "skipped": str(exc)})
                    continue
                ms = median_ms(lambda encode=encode, pil=pil: encode(pil), repeats)
                anchor = ANCHOR_DECODE_MS.get(size)
                row = {
                    "size": size,
                    "content": content,
                    "encoder": name,
                    "encode_ms": round(ms, 2),
                    "bytes": nbytes,
                    "cpu_decode_ms": round(decode_ms, 1),
                    "vs_cpu_decode": round(ms / decode_ms, 3),
                    "vs_h100_decode": round(ms / anchor, 2) if anchor else None,
                }
                log(row)
                rows.append(row)
    return rows
