"""How much GPU memory a decode needs above the weights, calibrated on measured peaks.

docs/reference-figures.md (H100, eager diffusers, SD v1 / SDXL / Flux decoder, which share one architecture):

=========================  ==========  =============
decode                     dtype       peak
=========================  ==========  =============
1 x 512²                   fp16        0.60 GiB
1 x 1024²                  fp16        2.38 GiB
1 x 1024²                  fp32        4.78 GiB
1 x 2048²                  fp16        9.53 GiB
4 x 1024², 8 x 512²        fp16        9.53, 4.76 GiB
1 x 2048², tiled (1024²)   fp16        2.42 GiB
=========================  ==========  =============

The peak is linear in output pixels, batch and element size: 1220 bytes per output pixel per byte of
element (2.38 GiB / 1024² / 2), within 1% of every row above. A tiled decode holds one tile's
activations plus the decoded tiles and the blended result (about two output images).
"""

from __future__ import annotations

__all__ = ["BYTES_PER_PIXEL_PER_ITEM", "estimate_decode_bytes", "estimate_tiled_decode_bytes", "GiB"]

GiB = 1024**3

#: Peak activation bytes per output pixel, per byte of element size (fit to docs/reference-figures.md, see above).
BYTES_PER_PIXEL_PER_ITEM = 1220.0

#: Copies of the output image a tiled decode holds at its peak (the tiles, then the blended rows).
_TILED_OUTPUT_COPIES = 2


def estimate_decode_bytes(batch: int, height: int, width: int, itemsize: int) -> int:
    """Bytes of activations for decoding ``batch`` images of ``height x width`` pixels in one call.

    ``itemsize``: 2 for fp16/bf16, 4 for fp32.
    """
    return int(BYTES_PER_PIXEL_PER_ITEM * itemsize * batch * height * width)


def estimate_tiled_decode_bytes(batch: int, height: int, width: int, itemsize: int, tile: int) -> int:
    """Bytes for diffusers' tiled decode with ``tile x tile`` pixel tiles (``vae.tile_sample_min_size``)."""
    tile_h, tile_w = min(tile, height), min(tile, width)
    activations = estimate_decode_bytes(batch, tile_h, tile_w, itemsize)
    outputs = _TILED_OUTPUT_COPIES * batch * 3 * height * width * itemsize
    return activations + outputs
