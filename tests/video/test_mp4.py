"""``encode_mp4``: H.264 yuv420p, frames pulled one at a time, odd sizes padded, clear errors."""

from __future__ import annotations

import io
import weakref

import av
import numpy as np
import pytest
import torch

from hf_remote_vae_toolkit.vae.mp4 import NoH264Encoder, choose_encoder, encode_mp4


def _read(data: bytes) -> tuple[list[np.ndarray], float, str, str]:
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        return frames, float(stream.average_rate), stream.codec_context.name, stream.codec_context.pix_fmt


def _gradient(f: int, h: int, w: int) -> np.ndarray:
    """Smooth frames (a codec keeps them within a few levels), uint8 [F, H, W, 3]."""
    y, x = np.mgrid[0:h, 0:w]
    frames = [np.stack([x * 255 // w, y * 255 // h, np.full_like(x, 20 * i)], -1) for i in range(f)]
    return np.stack(frames).astype(np.uint8)


def test_tensor_in_mp4_out() -> None:
    video = torch.from_numpy(_gradient(7, 48, 80))
    frames, fps, codec, pix_fmt = _read(encode_mp4(video, fps=12, crf=12))
    assert (len(frames), frames[0].shape, fps, codec, pix_fmt) == (7, (48, 80, 3), 12.0, "h264", "yuv420p")
    assert np.abs(frames[3].astype(int) - video[3].numpy()).mean() < 2


def test_frames_are_pulled_and_dropped_one_at_a_time() -> None:
    refs: list[weakref.ref[np.ndarray]] = []
    alive_at_pull: list[int] = []

    def make(i: int) -> np.ndarray:
        alive_at_pull.append(sum(r() is not None for r in refs))
        frame = _gradient(1, 32, 32)[0]
        refs.append(weakref.ref(frame))
        return frame

    data = encode_mp4((make(i) for i in range(10)), fps=10)
    assert len(_read(data)[0]) == 10
    assert max(alive_at_pull) == 0  # no earlier frame is still held when the next one is made


def test_odd_sizes_are_padded_to_even() -> None:
    frames, *_ = _read(encode_mp4(_gradient(3, 33, 47), fps=5))
    assert frames[0].shape == (34, 48, 3)


@pytest.mark.parametrize(
    ("frames", "kwargs", "needle"),
    [
        (np.zeros((2, 16, 16, 3), np.float32), {}, "uint8 [H, W, 3]"),
        (np.zeros((2, 16, 16, 4), np.uint8), {}, "uint8 [H, W, 3]"),
        (_gradient(2, 16, 16), {"crf": 52}, "crf"),
        (_gradient(2, 16, 16), {"fps": 0}, "fps"),
        ([], {}, "no frames"),
        ([_gradient(1, 16, 16)[0], _gradient(1, 16, 32)[0]], {}, "frame 1 is 32x16"),
    ],
)
def test_bad_input_is_a_value_error(frames: object, kwargs: dict[str, float], needle: str) -> None:
    with pytest.raises(ValueError, match=needle.replace("[", r"\[").replace("]", r"\]")):
        encode_mp4(frames, **kwargs)


def test_software_encoder_without_cuda() -> None:
    if torch.cuda.is_available():
        pytest.skip("a CUDA machine may open NVENC")
    assert choose_encoder() in ("libx264", "libopenh264")
    with pytest.raises(NoH264Encoder, match="h264_nvenc"):
        encode_mp4(_gradient(2, 16, 16), encoder="h264_nvenc")
