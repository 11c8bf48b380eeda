"""The video handlers behind the real server, spoken to by diffusers' own ``remote_decode``.

Tiny random weights (``Family.build_random("tiny")``) on the CPU in float32: every tensor result must equal
a local decode with the same weights, value for value.
"""

from __future__ import annotations

import io

import av
import numpy as np
import pytest
import requests
import torch
from diffusers.utils.remote_utils import remote_decode
from diffusers.video_processor import VideoProcessor

from hf_remote_vae_toolkit.vae.families import FAMILIES

from .conftest import VideoRepo

LATENT = (1, 16, 3, 8, 8)  # -> 9 frames of 64x64


def _latents(shape: tuple[int, ...] = LATENT, seed: int = 0) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def _post(url: str, z: torch.Tensor, accept: str, **params: object) -> requests.Response:
    """A raw protocol request (for what remote_decode cannot send: fps, crf, wrong combinations)."""
    query = {"shape": list(z.shape), "dtype": str(z.dtype).removeprefix("torch."), **params}
    headers = {"Content-Type": "tensor/binary", "Accept": accept}
    return requests.post(url, params=query, data=z.contiguous().numpy().tobytes(), headers=headers, timeout=120)


def _mp4_info(data: bytes) -> tuple[int, int, int, float, str, str]:
    """(frames, width, height, fps, codec, pixel format) of an MP4, read back with PyAV."""
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        frames = sum(1 for _ in container.decode(stream))
        ctx = stream.codec_context
        return frames, ctx.width, ctx.height, float(stream.average_rate), ctx.name, ctx.pix_fmt


def _uint8_like_diffusers(video: torch.Tensor) -> np.ndarray:
    """``VideoProcessor`` + ``numpy_to_pil`` rounding for the first item: uint8 ``[F, H, W, 3]``."""
    frames = VideoProcessor().postprocess_video(video, output_type="np")[0]
    return (frames * 255).round().astype("uint8")


def test_pt_raw_equals_local_decode(served: tuple[str, VideoRepo]) -> None:
    url, repo = served
    z = _latents()
    out = remote_decode(endpoint=url, tensor=z, output_type="pt", return_type="pt", do_scaling=False)
    assert out.shape == (1, 3, 9, 64, 64) and out.dtype == torch.float32
    assert torch.equal(out, repo.decode(z))


def test_pt_partial_postprocess_is_uint8_frames(served: tuple[str, VideoRepo]) -> None:
    url, repo = served
    z = _latents()
    out = remote_decode(
        endpoint=url, tensor=z, output_type="pt", partial_postprocess=True, return_type="pt", do_scaling=False
    )
    assert out.shape == (9, 64, 64, 3) and out.dtype == torch.uint8
    assert np.array_equal(out.numpy(), _uint8_like_diffusers(repo.decode(z)))
    frames = remote_decode(
        endpoint=url, tensor=z, output_type="pt", partial_postprocess=True, return_type="pil", do_scaling=False
    )
    assert len(frames) == 9 and frames[0].size == (64, 64)


def test_pil_with_video_processor(served: tuple[str, VideoRepo]) -> None:
    url, repo = served
    z = _latents()
    local = repo.decode(z)
    out = remote_decode(
        endpoint=url, tensor=z, output_type="pil", processor=VideoProcessor(), return_type="pt", do_scaling=False
    )
    assert out.shape == (9, 3, 64, 64) and out.dtype == torch.float32
    assert 0 <= out.min() and out.max() <= 1
    assert torch.equal(out, VideoProcessor().postprocess_video(local, output_type="pt")[0])
    frames = remote_decode(
        endpoint=url, tensor=z, output_type="pil", processor=VideoProcessor(), return_type="pil", do_scaling=False
    )
    expected = VideoProcessor().postprocess_video(local, output_type="pil")[0]
    assert len(frames) == 9
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(frames, expected))


def test_mp4_reads_back_with_the_right_frames_size_and_fps(served: tuple[str, VideoRepo]) -> None:
    url, repo = served
    z = _latents()
    data = remote_decode(endpoint=url, tensor=z, output_type="mp4", return_type="mp4", do_scaling=False)
    default_fps = FAMILIES[repo.family].default_fps
    assert _mp4_info(data) == (9, 64, 64, default_fps, "h264", "yuv420p")

    response = _post(url, z, "text/plain", output_type="mp4", fps=24, crf=10)
    assert response.status_code == 200, response.text
    assert _mp4_info(response.content)[:4] == (9, 64, 64, 24.0)
    with av.open(io.BytesIO(response.content)) as container:
        first = next(container.decode(video=0)).to_ndarray(format="rgb24")
    # 4:2:0 chroma subsampling alone moves random-weight noise frames by ~14 levels, so compare with the
    # exact frame after the same subsampling: what is left is the codec's loss, small at this CRF
    exact = av.VideoFrame.from_ndarray(_uint8_like_diffusers(repo.decode(z))[0], format="rgb24")
    expected = exact.reformat(format="yuv420p").reformat(format="rgb24").to_ndarray()
    assert np.abs(first.astype(np.int16) - expected.astype(np.int16)).mean() < 2


def test_batch_of_two(served: tuple[str, VideoRepo]) -> None:
    url, repo = served
    z = _latents((2, 16, 2, 8, 8))
    out = remote_decode(endpoint=url, tensor=z, output_type="pt", return_type="pt", do_scaling=False)
    assert out.shape == (2, 3, 5, 64, 64)
    assert torch.equal(out, repo.decode(z))
    first = remote_decode(
        endpoint=url, tensor=z, output_type="pt", partial_postprocess=True, return_type="pt", do_scaling=False
    )
    assert first.shape == (5, 64, 64, 3)  # the first item only, as the protocol says


def test_explicit_scaling_factor_wins(served: tuple[str, VideoRepo]) -> None:
    url, repo = served
    z = _latents()
    out = remote_decode(endpoint=url, tensor=z, output_type="pt", return_type="pt", scaling_factor=0.5)
    assert torch.equal(out, repo.decode(z / 0.5))


def test_do_scaling_uses_the_model_normalisation(served: tuple[str, VideoRepo]) -> None:
    url, repo = served
    z = _latents()
    out = remote_decode(endpoint=url, tensor=z, output_type="pt", return_type="pt", do_scaling=True)
    config = repo.vae.config
    if repo.family == "wan":
        std = torch.tensor(config.latents_std).view(1, -1, 1, 1, 1)
        mean = torch.tensor(config.latents_mean).view(1, -1, 1, 1, 1)
        expected = repo.decode(z * std + mean)
    else:
        expected = repo.decode(z / config.scaling_factor)
    assert torch.equal(out, expected)


@pytest.mark.parametrize(
    ("shape", "accept", "params", "needle"),
    [
        ((1, 16, 8, 8), "tensor/binary", {"output_type": "pt"}, "[B, 16, T, h, w]"),
        ((1, 4, 3, 8, 8), "tensor/binary", {"output_type": "pt"}, "16 channels"),
        (LATENT, "image/jpeg", {"output_type": "pil"}, "output_type=mp4 with Accept text/plain"),
        (LATENT, "image/png", {"output_type": "pil"}, "no single image"),
        (LATENT, "tensor/binary", {"output_type": "mp4"}, "output_type=pt with Accept tensor/binary"),
        (LATENT, "text/plain", {"output_type": "mp4", "fps": 0}, "fps must be"),
        (LATENT, "text/plain", {"output_type": "mp4", "crf": 60}, "crf must be"),
    ],
)
def test_bad_requests_are_400_with_the_valid_choices(
    served: tuple[str, VideoRepo], shape: tuple[int, ...], accept: str, params: dict[str, object], needle: str
) -> None:
    url, _ = served
    response = _post(url, torch.zeros(shape), accept, **params)
    assert response.status_code == 400, response.text
    assert needle in response.json()["error"]
