"""The video decode memory estimate against the peaks measured on an H100 (ANCHORS.md)."""

from __future__ import annotations

import pytest

from hf_remote_vae_toolkit.vae.video_memory import estimate_video_decode_bytes, num_output_frames

GiB = 1024**3

# family, latent shape, tiled, measured peak above weights (GiB), fp16/bf16
ANCHORS = [
    ("hunyuanvideo", (1, 16, 3, 40, 64), False, 4.867),
    ("hunyuanvideo", (1, 16, 16, 60, 104), False, 21.776),
    ("hunyuanvideo", (1, 16, 16, 60, 104), True, 3.842),
    ("hunyuanvideo", (1, 16, 33, 90, 160), True, 5.113),
    ("wan", (1, 16, 21, 60, 104), False, 4.561),
    ("wan", (1, 16, 21, 90, 160), False, 10.517),
]


@pytest.mark.parametrize(("family", "shape", "tiled", "measured"), ANCHORS)
def test_estimate_matches_measured_peaks(family: str, shape: tuple[int, ...], tiled: bool, measured: float) -> None:
    estimate = estimate_video_decode_bytes(family, shape, 2, tiled=tiled) / GiB
    # never more than 1% under (admission would overcommit), at most 6% over (wasted budget)
    assert measured * 0.99 <= estimate <= measured * 1.06, (estimate, measured)


@pytest.mark.parametrize("family", ["hunyuanvideo", "wan"])
def test_tiling_helps_big_videos_and_fp32_costs_double(family: str) -> None:
    shape = (1, 16, 33, 90, 160)
    assert estimate_video_decode_bytes(family, shape, 2, tiled=True) < estimate_video_decode_bytes(family, shape, 2) / 2
    half, full = estimate_video_decode_bytes(family, shape, 2), estimate_video_decode_bytes(family, shape, 4)
    assert 1.9 * half < full < 2.1 * half


def test_frame_count() -> None:
    assert [num_output_frames(t) for t in (1, 2, 16, 21, 33)] == [1, 5, 61, 81, 129]
