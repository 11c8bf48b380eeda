"""Streamed video decode (issue 17): chunked decode equal to the one-shot one, a fragmented MP4 and uint8 frames
sent while the decoder runs, diffusers' plain MP4 unchanged, a failure mid-stream seen as a truncated stream,
and a client that leaves stopping the decode. Real server on loopback, tiny real diffusers VAEs, float32 CPU.
"""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
import requests
import torch
from diffusers.utils.remote_utils import remote_decode as diffusers_remote_decode

from hf_remote_vae_toolkit.client import remote_decode
from hf_remote_vae_toolkit.client.streaming import StreamTruncated, iter_decode_frames, stream_decode_to_file
from hf_remote_vae_toolkit.testing import running_server
from hf_remote_vae_toolkit.vae.video import VideoDecodeHandler
from hf_remote_vae_toolkit.vae.video_stream import Mp4Fragments, chunked_decode, count_chunks

from .conftest import VideoRepo


def _latents(shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def _post(url: str, z: torch.Tensor, accept: str, *, lazy: bool = False, **params: Any) -> requests.Response:
    query = {"shape": list(z.shape), "dtype": "float32", **params}
    headers = {"Content-Type": "tensor/binary", "Accept": accept}
    data = z.contiguous().numpy().tobytes()
    return requests.post(url, params=query, data=data, headers=headers, timeout=120, stream=lazy)


def _mp4_frames(data: bytes) -> np.ndarray:
    with av.open(io.BytesIO(data)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean())
    return float("inf") if mse == 0 else 10 * float(np.log10(255**2 / mse))


def _handler(repo: VideoRepo) -> VideoDecodeHandler:
    cls = type("EndpointHandler", (VideoDecodeHandler,), {"family": repo.family})
    return cls(str(repo.path))


# --------------------------------------------------------------------------- chunked decode, locally


@pytest.mark.parametrize(
    ("family", "frames", "tiled"),
    [
        ("wan", 4, False),
        ("wan", 3, True),
        ("hunyuanvideo", 3, False),
        ("hunyuanvideo", 9, False),
        ("hunyuanvideo", 6, True),
    ],
)
def test_chunked_decode_equals_one_shot(
    video_repos: dict[str, VideoRepo], family: str, frames: int, tiled: bool
) -> None:
    vae = video_repos[family].vae
    side = 6 if tiled else 4  # 48 px frames cross the 32 px tiles; 32 px ones stay untiled
    z = _latents((1, 16, frames, side, side), seed=frames)
    if tiled:
        vae.enable_tiling(
            tile_sample_min_height=32,
            tile_sample_min_width=32,
            tile_sample_stride_height=24,
            tile_sample_stride_width=24,
        )
    try:
        with torch.inference_mode():
            whole = vae.decode(z).sample
            chunks = list(chunked_decode(vae, z))
        assert len(chunks) == count_chunks(vae, frames)
    finally:
        vae.disable_tiling()
    if not tiled:
        assert len(chunks) > 1 or frames <= 4  # really in pieces
    assert torch.equal(torch.cat(chunks, dim=2), whole)  # bit-equal: the same calls in the same order


def _smooth_video(frames: int, h: int, w: int) -> np.ndarray:
    """Moving gradients and a moving disk: content H.264 compresses as it does real video (unlike noise)."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    out = []
    for i in range(frames):
        rgb = np.stack(
            [
                127 + 100 * np.sin((x + 3 * i) / 17.0),
                127 + 100 * np.cos((y - 2 * i) / 23.0),
                127 + 100 * np.sin((x + y + 5 * i) / 31.0),
            ],
            -1,
        )
        rgb[((x - (w / 4 + 2 * i)) ** 2 + (y - h / 2) ** 2) < (h / 6) ** 2] = [240, 30, 30]
        out.append(rgb.clip(0, 255).astype(np.uint8))
    return np.stack(out)


def test_fragmented_mp4_leaves_as_it_is_written_and_matches_the_plain_file() -> None:
    from hf_remote_vae_toolkit.vae.mp4 import encode_mp4

    frames = _smooth_video(40, 64, 96)
    pieces: list[bytes] = []
    writer = Mp4Fragments(pieces.append, fps=16, crf=18)
    writer.write(frames[:1])
    assert pieces and pieces[0][4:8] == b"ftyp"  # the header leaves with the first chunk
    fragment_at = None
    for start in range(1, 40, 4):
        writer.write(frames[start : start + 4])
        if fragment_at is None and any(b"moof" in piece for piece in pieces):
            fragment_at = start + 4
    writer.close()
    # frames follow the encoder's 8-frame look-ahead, not the end of the video
    assert fragment_at is not None and fragment_at <= 20, fragment_at
    streamed, plain = _mp4_frames(b"".join(pieces)), _mp4_frames(encode_mp4(frames, fps=16, crf=18))
    # same encoder, same options; x264's threads make two encodes differ slightly (41.6 dB to identical, measured)
    assert streamed.shape == frames.shape and psnr(streamed, plain) >= 40
    assert abs(psnr(streamed, frames) - psnr(plain, frames)) < 0.3  # the same quality at the same CRF


# --------------------------------------------------------------------------- over HTTP


def test_video_mp4_accept_streams_and_plays(served: tuple[str, VideoRepo]) -> None:
    url, _ = served
    z = _latents((1, 16, 6, 8, 8))
    response = _post(url, z, "video/mp4", output_type="mp4", do_scaling=False)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "video/mp4"
    assert response.headers.get("transfer-encoding") == "chunked" and "content-length" not in response.headers
    assert response.headers["x-frames"] == "21"
    streamed = _mp4_frames(response.content)
    assert streamed.shape == (21, 64, 64, 3)
    # the plain file (stream=false): same encoder and options; x264's threads make no two encodes bit-equal, so
    # the measure is PSNR between the two files and the same distance from the decoded frames
    plain = _post(url, z, "video/mp4", output_type="mp4", do_scaling=False, stream="false")
    assert "content-length" in plain.headers and b"moof" not in plain.content
    plain_frames = _mp4_frames(plain.content)
    raw = _post(url, z, "tensor/binary", output_type="pt", partial_postprocess="true", do_scaling=False)
    exact = np.frombuffer(raw.content, dtype=np.uint8).reshape(21, 64, 64, 3)
    assert psnr(streamed, plain_frames) >= 40
    assert abs(psnr(streamed, exact) - psnr(plain_frames, exact)) < 0.5


def test_diffusers_remote_decode_mp4_unchanged(served: tuple[str, VideoRepo]) -> None:
    url, _ = served
    z = _latents((1, 16, 6, 8, 8), seed=3)
    data = diffusers_remote_decode(endpoint=url, tensor=z, output_type="mp4", return_type="mp4", do_scaling=False)
    assert isinstance(data, bytes) and data[4:8] == b"ftyp" and b"moof" not in data  # the plain file, as before
    assert _mp4_frames(data).shape == (21, 64, 64, 3)


def test_frame_stream_is_bit_equal_to_the_one_shot_decode(served: tuple[str, VideoRepo]) -> None:
    url, _ = served
    z = _latents((1, 16, 6, 8, 8), seed=4)
    whole = remote_decode(url, z, output_type="pt", return_type="pt", partial_postprocess=True, do_scaling=False)
    frames = list(iter_decode_frames(url, z, do_scaling=False))
    assert len(frames) == 21
    np.testing.assert_array_equal(np.stack(frames), whole.numpy())
    # the streamed body read whole is the same tensor/binary answer
    response = _post(
        url, z, "tensor/binary", output_type="pt", partial_postprocess="true", do_scaling=False, stream="true"
    )
    assert response.headers["shape"] == "[21,64,64,3]" and response.content == whole.numpy().tobytes()


def test_stream_to_file_with_progress(served: tuple[str, VideoRepo], tmp_path: Path) -> None:
    url, _ = served
    seen: list[int] = []
    result = stream_decode_to_file(
        url, _latents((1, 16, 4, 8, 8)), tmp_path / "out.mp4", do_scaling=False, progress=seen.append
    )
    assert result.path.read_bytes()[4:8] == b"ftyp" and result.frames == 13
    assert seen and seen[-1] == result.bytes == result.path.stat().st_size and seen == sorted(seen)
    assert _mp4_frames(result.path.read_bytes()).shape[0] == 13
    assert not (tmp_path / "out.mp4.part").exists()


def test_bad_stream_requests_are_400(served: tuple[str, VideoRepo]) -> None:
    url, _ = served
    z = _latents((1, 16, 2, 8, 8))
    bad = _post(url, z, "tensor/binary", output_type="pt", stream="true")
    assert bad.status_code == 400 and "partial_postprocess=true" in bad.json()["error"]
    maybe = _post(url, z, "video/mp4", output_type="mp4", stream="maybe")
    assert maybe.status_code == 400 and "stream must be true or false" in maybe.json()["error"]
    as_json = _post(url, z, "application/json", output_type="pt", partial_postprocess="true", stream="true")
    assert as_json.status_code == 400 and "tensor/binary" in as_json.json()["error"]
    with pytest.raises(ValueError, match="video latents"):
        list(iter_decode_frames(url, torch.zeros(1, 16, 8, 8)))


class _FailingDecoder(torch.nn.Module):
    """Wraps the real decoder; raises on call ``fail_at`` (a device error in the middle of a video)."""

    def __init__(self, inner: torch.nn.Module, fail_at: int, delay: float = 0.0) -> None:
        super().__init__()
        self.inner = inner
        self.fail_at = fail_at
        self.delay = delay
        self.calls = 0

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        if self.calls == self.fail_at:
            raise RuntimeError("simulated device failure")
        time.sleep(self.delay)
        return self.inner(*args, **kwargs)


def _records(handler: VideoDecodeHandler, at_least: int, timeout: float = 30.0) -> list[Any]:
    """The handler's finished streams, once there are ``at_least`` (a stream's record lands when its producer
    returns, which may be just after the client read the end)."""
    history = handler.__dict__.setdefault("stream_history", [])
    deadline = time.monotonic() + timeout
    while len(history) < at_least and time.monotonic() < deadline:
        time.sleep(0.05)
    return list(history)


@pytest.fixture(scope="module")
def wan_handler(video_repos: dict[str, VideoRepo]) -> VideoDecodeHandler:
    return _handler(video_repos["wan"])


def test_failure_mid_stream_is_a_truncated_stream(wan_handler: VideoDecodeHandler, tmp_path: Path) -> None:
    vae = wan_handler.loaded.vae
    real = vae.decoder
    z = _latents((1, 16, 8, 8, 8), seed=5)
    before = len(_records(wan_handler, 0))
    with running_server(handler=wan_handler) as url:
        try:
            vae.decoder = _FailingDecoder(real, fail_at=4)
            with pytest.raises(StreamTruncated) as raised:
                list(iter_decode_frames(url, z, do_scaling=False))
            assert raised.value.request_id and "9 of 29 frames came" in str(raised.value)
            vae.decoder = _FailingDecoder(real, fail_at=4)
            with pytest.raises(StreamTruncated) as raised_mp4:
                stream_decode_to_file(url, z, tmp_path / "broken.mp4", do_scaling=False)
            assert raised_mp4.value.request_id and not list(tmp_path.iterdir())
        finally:
            vae.decoder = real
        # the worker lives on: the next stream completes
        assert len(list(iter_decode_frames(url, z, do_scaling=False))) == 29
    records = _records(wan_handler, before + 3)
    assert [r.outcome for r in records[-3:]] == ["failed", "failed", "done"]


@pytest.mark.parametrize("accept", ["video/mp4", "tensor/binary"])
def test_client_leaving_stops_the_decode(wan_handler: VideoDecodeHandler, accept: str) -> None:
    vae = wan_handler.loaded.vae
    real = vae.decoder
    z = _latents((1, 16, 21, 8, 8), seed=6)  # 21 latent frames: 21 chunks
    before = len(_records(wan_handler, 0))
    with running_server(handler=wan_handler) as url:
        try:
            vae.decoder = _FailingDecoder(real, fail_at=0, delay=0.15)  # slow enough to leave mid-way
            params = (
                {"output_type": "mp4"}
                if accept == "video/mp4"
                else {"output_type": "pt", "partial_postprocess": "true", "stream": "true"}
            )
            response = _post(url, z, accept, lazy=True, do_scaling=False, **params)
            assert response.status_code == 200
            next(response.iter_content(64))  # the first bytes are here while the decode goes on
            _hard_close(response)
            records = _records(wan_handler, before + 1)
        finally:
            vae.decoder = real
        record = records[-1]
        assert record.outcome == "closed", record
        assert record.chunks_total == 21 and record.chunks_decoded < 21, record
        # the worker is free again: a plain request is answered
        assert (
            remote_decode(url, _latents((1, 16, 2, 8, 8)), output_type="pt", return_type="pt", do_scaling=False).shape[
                2
            ]
            == 5
        )


def _hard_close(response: requests.Response) -> None:
    """Close the connection mid-body, as a client that goes away does (urllib3 does not pool an unread one)."""
    response.close()


def test_cli_streams_video_latents_to_mp4(served: tuple[str, VideoRepo], tmp_path: Path, capsys: Any) -> None:
    from safetensors.torch import save_file

    from hf_remote_vae_toolkit.cli import main

    url, _ = served
    src = tmp_path / "clip.safetensors"
    save_file({"latents": _latents((1, 16, 3, 8, 8))}, src)
    out = tmp_path / "clip.mp4"
    assert main(["decode", str(src), "--endpoint", url, "-o", str(out), "--no-scaling", "--no-progress"]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    data = out.read_bytes()
    assert b"moof" in data and _mp4_frames(data).shape == (9, 64, 64, 3)


def test_remote_vae_hands_frames_over_as_they_arrive(served: tuple[str, VideoRepo]) -> None:
    from hf_remote_vae_toolkit.client import RemoteVAE

    url, repo = served
    z = _latents((1, 16, 3, 8, 8), seed=7)
    vae = RemoteVAE(url, family=repo.family)
    frames = vae.iter_frames(z)
    first = next(frames)
    assert first.dtype == torch.uint8 and first.shape == (64, 64, 3)
    rest = list(frames)
    whole = remote_decode(url, z, output_type="pt", return_type="pt", partial_postprocess=True, do_scaling=False)
    assert torch.equal(torch.stack([first, *rest]), whole)


@pytest.mark.parametrize("family", ["wan", "hunyuanvideo"])
def test_streamed_estimate_does_not_grow_with_the_clip(family: str) -> None:
    from hf_remote_vae_toolkit.vae.video_memory import estimate_video_decode_bytes as estimate

    short, long_ = (1, 16, 11, 60, 104), (1, 16, 41, 60, 104)
    assert estimate(family, long_, streamed=True) == estimate(family, short, streamed=True)
    assert estimate(family, long_, streamed=True) < estimate(family, short) < estimate(family, long_)
    # a Wan decode over the budget runs tiled, whole: the stream then holds the whole video like the one-shot
    if family == "wan":
        assert estimate(family, long_, tiled=True, streamed=True) == estimate(family, long_, tiled=True)


def test_an_encoder_failure_reaches_the_reader_after_the_pieces_before_it() -> None:
    import threading

    from hf_remote_vae_toolkit.vae.video_stream import StreamFailed, StreamRecord, VideoStream

    sizes = [32, 32, 48]  # the third chunk changes the frame size: the MP4 encoder refuses it

    def chunks() -> Any:
        for side in sizes:
            yield torch.zeros(1, 3, 4, side, side)

    stream = VideoStream(
        chunks,
        lambda chunk: np.zeros((chunk.shape[2], chunk.shape[3], chunk.shape[4], 3), dtype=np.uint8),
        media_type="video/mp4",
        record=StreamRecord(media_type="video/mp4", chunks_total=3),
        mp4=(16.0, 18),
    )
    worker = threading.Thread(target=stream.produce)
    worker.start()
    pieces = []
    with pytest.raises(StreamFailed, match="the MP4 encode failed"):
        for piece in stream:
            pieces.append(piece)
    worker.join(10)
    assert not worker.is_alive() and pieces and pieces[0][4:8] == b"ftyp"
    stream.close()
