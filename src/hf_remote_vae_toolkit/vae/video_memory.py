"""GPU memory a video VAE decode needs, as it will run (untiled or tiled), from shapes alone.

Shared by the video handlers (tile or not) and the scheduler (admit or wait). The model has two terms:

``peak = fixed + per_pixel * chunk_pixels * batch * itemsize/2  +  out_factor * output_bytes``

- ``chunk_pixels``: output pixels (x frames) the decoder holds activations for at once. HunyuanVideo
  decodes in temporal chunks of ``tile_sample_min_num_frames // 4 + 1`` latent frames (17 output frames with
  diffusers' defaults; this "framewise" decode is on even without tiling), each at full size, or at one
  spatial tile (256x256 by default) when tiled. Wan decodes one latent frame at a time with a causal
  cache, so its activations scale with one frame's pixels (or one tile's) and not with the frame count.
- ``output_bytes``: the decoded video ``[B, 3, F, H, W]`` in the model dtype. Decoders keep the decoded
  chunks in a list and concatenate them (HunyuanVideo: chunks overlap by 16/12 frames, then ``cat``: 2.4x;
  Wan: repeated ``cat`` + ``clamp``: 2x untiled, overlapping tiles + rows + ``cat`` ~3.8x tiled).
- ``fixed``: HunyuanVideo's small decodes cost ~4% more per pixel than its large ones; a fixed 0.2 GiB
  keeps the estimate at or above every measurement instead of fitting a curve to four points.

Calibrated on an H100 with diffusers 0.42.1 (ANCHORS.md; peak above weights, fp16/bf16):

| model | latent | as run | measured | this model |
|---|---|---|---|---|
| HunyuanVideo | 1x16x3x40x64 | untiled | 4.87 GiB | 4.86 GiB |
| HunyuanVideo | 1x16x16x60x104 | untiled | 21.8 GiB | 21.9 GiB |
| HunyuanVideo | 1x16x16x60x104 | tiled | 3.84 GiB | 4.03 GiB |
| HunyuanVideo | 1x16x33x90x160 | tiled | 5.11 GiB | 5.30 GiB |
| Wan 2.1 | 1x16x21x60x104 | untiled | 4.56 GiB | 4.56 GiB |
| Wan 2.1 | 1x16x21x90x160 | untiled | 10.5 GiB | 10.5 GiB |

Wan tiled has no measurement yet: its figure follows the same per-pixel cost at one tile.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["VideoCost", "VIDEO_COSTS", "TileSizes", "estimate_video_decode_bytes", "num_output_frames"]

KiB = 1024
GiB = 1024**3


@dataclass(frozen=True)
class VideoCost:
    """Per-family constants of the estimate (at a 2-byte dtype)."""

    per_pixel_bytes: float  # activation bytes per output pixel of the chunk held at once
    out_factor_untiled: float  # multiples of the output tensor alive at the peak
    out_factor_tiled: float
    temporal_chunks: bool  # decodes in chunks of frames (HunyuanVideo) vs one latent frame at a time (Wan)
    fixed_bytes: float = 0.0


VIDEO_COSTS: dict[str, VideoCost] = {
    "hunyuanvideo": VideoCost(
        per_pixel_bytes=3.3 * KiB,
        out_factor_untiled=2.4,
        out_factor_tiled=2.4,
        temporal_chunks=True,
        fixed_bytes=0.2 * GiB,
    ),
    "wan": VideoCost(per_pixel_bytes=11.0 * KiB, out_factor_untiled=2.0, out_factor_tiled=3.8, temporal_chunks=False),
}


@dataclass(frozen=True)
class TileSizes:
    """diffusers' tiling parameters, in output pixels / frames (its defaults for both video VAEs)."""

    min_height: int = 256
    min_width: int = 256
    min_num_frames: int = 16  # HunyuanVideo only: frames per temporal chunk
    spatial_factor: int = 8
    temporal_factor: int = 4

    @classmethod
    def of(cls, vae: object) -> TileSizes:
        """The sizes a loaded diffusers VAE will actually use (after any ``enable_tiling`` overrides)."""
        return cls(
            min_height=int(getattr(vae, "tile_sample_min_height", cls.min_height)),
            min_width=int(getattr(vae, "tile_sample_min_width", cls.min_width)),
            min_num_frames=int(getattr(vae, "tile_sample_min_num_frames", cls.min_num_frames)),
            spatial_factor=int(getattr(vae, "spatial_compression_ratio", cls.spatial_factor)),
            temporal_factor=int(getattr(vae, "temporal_compression_ratio", cls.temporal_factor)),
        )


def num_output_frames(latent_frames: int, temporal_factor: int = 4) -> int:
    """``(T - 1) * 4 + 1``: the causal video VAEs decode the first latent frame to one frame."""
    return (latent_frames - 1) * temporal_factor + 1


def estimate_video_decode_bytes(
    family: str,
    shape: tuple[int, ...] | list[int],
    itemsize: int = 2,
    *,
    tiled: bool = False,
    tiles: TileSizes | None = None,
    streamed: bool = False,
) -> int:
    """Bytes of GPU activations for decoding latents of ``shape`` ``[B, C, T, h, w]`` (weights excluded).

    ``itemsize``: bytes per element of the model dtype (2 for fp16/bf16, 4 for fp32). ``tiled``: as run
    with ``vae.enable_tiling()``. ``family``: a key of ``VIDEO_COSTS``. ``streamed``: decoded chunk by chunk
    for a streamed response (``video_stream.py``, first batch item only): the output term then covers two
    chunks (the one being converted and the one before, which HunyuanVideo blends with) instead of the whole
    video. A Wan decode that runs tiled is not chunked and keeps the whole-video term.
    """
    cost = VIDEO_COSTS[family]
    t = tiles or TileSizes()
    batch, _, latent_frames, lh, lw = (int(d) for d in shape)
    height, width = lh * t.spatial_factor, lw * t.spatial_factor
    frames = num_output_frames(latent_frames, t.temporal_factor)

    if cost.temporal_chunks:
        # diffusers' framewise decode: chunks of (min_num_frames // 4 + 1) latent frames, whenever longer
        chunk_latent = t.min_num_frames // t.temporal_factor
        chunk_frames = (
            num_output_frames(chunk_latent + 1, t.temporal_factor) if latent_frames > chunk_latent else frames
        )
    else:
        chunk_frames = 1  # one latent frame at a time; the per-pixel cost already covers its 4 frames
    if tiled and (height > t.min_height or width > t.min_width):
        chunk_h, chunk_w = min(height, t.min_height), min(width, t.min_width)
    else:
        chunk_h, chunk_w = height, width

    if streamed and (cost.temporal_chunks or not tiled):
        batch = 1
        held = min(frames, 2 * (chunk_frames if cost.temporal_chunks else t.temporal_factor))
        activations = cost.per_pixel_bytes * chunk_frames * chunk_h * chunk_w * itemsize / 2
        return int(cost.fixed_bytes + activations + 2 * 3 * held * height * width * itemsize)
    activations = cost.per_pixel_bytes * chunk_frames * chunk_h * chunk_w * batch * itemsize / 2
    output_bytes = batch * 3 * frames * height * width * itemsize
    out_factor = cost.out_factor_tiled if tiled else cost.out_factor_untiled
    return int(cost.fixed_bytes + activations + out_factor * output_bytes)
