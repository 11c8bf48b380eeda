"""H.264 MP4 encoding with PyAV, one frame at a time, into an in-memory buffer.

Frames arrive as uint8 ``[H, W, 3]`` RGB (numpy arrays or CPU/GPU tensors) from an iterator; each one is
converted to yuv420p, handed to the encoder and dropped, so the host never holds a second full copy of
the video next to the compressed bytes. A ``[F, H, W, 3]`` uint8 tensor is accepted too (iterated along
``F``).

Encoder choice (first that opens wins): ``h264_nvenc`` only when CUDA is available (an H100 has no NVENC
unit, so it fails to open there and we move on), then ``libx264`` with threads, then ``libopenh264``,
then whatever other H.264 encoder this FFmpeg build has. The probe result is cached per process.

Quality is a CRF-like number (0 best .. 51 worst, default 18: visually near-lossless with x264, a
few hundred KB for a few seconds of 480p). Encoders without CRF get the nearest equivalent.

yuv420p needs an even width and height: an odd dimension is padded by repeating the last row/column
(no pixel of the input is lost; the video is at most one pixel larger). VAE outputs are multiples of
8 and never need it.
"""

from __future__ import annotations

import io
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from fractions import Fraction
from typing import Any

import numpy as np

__all__ = ["encode_mp4", "choose_encoder", "h264_encoders", "DEFAULT_CRF", "NoH264Encoder"]

DEFAULT_CRF = 18
#: Probe size for "does this encoder open": small but above every encoder's minimum.
_PROBE_SIZE = (64, 64)


class NoH264Encoder(RuntimeError):
    """This FFmpeg build has no H.264 encoder that opens."""


def _x264_options(crf: int) -> dict[str, str]:
    # "fast" costs little quality against "medium" and keeps the encode well under the decode time. A look-ahead
    # of 8 frames instead of its 30: a streamed MP4 (video_stream.py) leaves 8 frames behind the decode, not 30,
    # for ~4 % more bytes at the same CRF; the plain file uses the same options, so the two hold the same frames.
    return {"crf": str(crf), "preset": "fast", "rc-lookahead": "8"}


def _nvenc_options(crf: int) -> dict[str, str]:
    # NVENC's constant-quality mode; cq follows x264's CRF scale closely enough.
    return {"rc": "vbr", "cq": str(max(crf, 1)), "preset": "p4"}


def _openh264_options(crf: int) -> dict[str, str]:
    # No CRF in openh264: its rate control takes a bitrate, set per stream in _bitrate_for().
    return {"allow_skip_frames": "0"}


def _no_options(crf: int) -> dict[str, str]:
    return {}


#: Encoder name -> (needs CUDA, options for a CRF). The order is the preference order.
_ENCODERS: dict[str, tuple[bool, Callable[[int], dict[str, str]]]] = {
    "h264_nvenc": (True, _nvenc_options),
    "libx264": (False, _x264_options),
    "libopenh264": (False, _openh264_options),
}

_probe_lock = threading.Lock()
_probed: dict[str, bool] = {}


def h264_encoders() -> list[str]:
    """H.264 encoder names this PyAV/FFmpeg build knows, in preference order (unprobed)."""
    import av

    known = set(av.codecs_available)
    preferred = [name for name in _ENCODERS if name in known]
    others = sorted(n for n in known if n.startswith("h264_") and n not in _ENCODERS and _is_encoder(n))
    return preferred + others


def _is_encoder(name: str) -> bool:
    import av

    try:
        av.codec.Codec(name, "w")
    except Exception:  # not an encoder in this build (e.g. h264_cuvid is a decoder)
        return False
    return True


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency, but mp4 encoding does not need it
        return False
    return bool(torch.cuda.is_available())


def _opens(name: str) -> bool:
    """Whether the encoder actually opens here (hardware encoders are listed even without hardware)."""
    import av

    with _probe_lock:
        if name in _probed:
            return _probed[name]
        try:
            ctx: Any = av.CodecContext.create(name, "w")
            ctx.width, ctx.height = _PROBE_SIZE
            ctx.pix_fmt = "yuv420p"
            ctx.time_base = Fraction(1, 25)
            ctx.open()
            ok = True
        except Exception:  # any FFmpeg error means "not usable here"; the next candidate is tried
            ok = False
        _probed[name] = ok
        return ok


def choose_encoder(preferred: str | None = None) -> str:
    """The H.264 encoder to use: ``preferred`` if given and it opens, else the first that opens.

    Raises ``NoH264Encoder`` naming what was tried when none opens.
    """
    candidates = h264_encoders()
    if preferred:
        candidates = [preferred] + [c for c in candidates if c != preferred]
    cuda = _cuda_available()
    tried = []
    for name in candidates:
        needs_cuda = _ENCODERS.get(name, (name.endswith("_nvenc"), _no_options))[0]
        if needs_cuda and not cuda:
            continue
        tried.append(name)
        if _opens(name):
            return name
    raise NoH264Encoder(
        f"no H.264 encoder opens in this FFmpeg build (tried {tried or 'none'}); "
        "install a PyAV wheel with libx264 (pip install av) or ask for output_type='pt'"
    )


def _bitrate_for(width: int, height: int, fps: float, crf: int) -> int:
    """A bitrate for encoders without CRF: ~0.1 bit per pixel at CRF 18, halving every 6 CRF steps."""
    bits_per_pixel = 0.1 * 2 ** ((18 - crf) / 6)
    return max(100_000, int(width * height * fps * bits_per_pixel))


def _as_frames(frames: Any) -> Iterator[Any]:
    """A ``[F, H, W, 3]`` tensor/array, or an iterable of ``[H, W, 3]`` frames -> an iterator of frames."""
    if hasattr(frames, "ndim") and frames.ndim == 4:
        return (frames[i] for i in range(frames.shape[0]))
    return iter(frames)


def _to_uint8_hwc(frame: Any) -> np.ndarray:
    """One frame -> a C-contiguous uint8 ``[H, W, 3]`` host array, even height and width."""
    if hasattr(frame, "detach"):  # torch tensor, possibly on a GPU: copy just this frame to the host
        frame = frame.detach().cpu().numpy()
    arr = np.asarray(frame)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"a frame must be uint8 [H, W, 3] RGB, got {arr.dtype} {list(arr.shape)}")
    pad_h, pad_w = arr.shape[0] % 2, arr.shape[1] % 2
    if pad_h or pad_w:
        arr = np.pad(arr, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    return np.ascontiguousarray(arr)


def encode_mp4(
    frames: Iterable[Any] | Any,
    fps: float = 15,
    crf: int = DEFAULT_CRF,
    *,
    encoder: str | None = None,
    threads: int | None = None,
) -> bytes:
    """Encode RGB frames to an H.264 (yuv420p) MP4 and return the file's bytes.

    ``frames``: an iterable of uint8 ``[H, W, 3]`` frames (numpy or torch, any device) or one uint8
    ``[F, H, W, 3]`` tensor/array; all frames must have the same size. Frames are pulled one at a
    time, so a generator that converts each frame on demand keeps host memory at one frame.
    ``fps`` > 0; ``crf`` in 0..51 (lower is better); ``encoder`` forces an encoder name (it must open);
    ``threads`` defaults to the CPU count (x264 scales to ~16).
    """
    try:
        import av
    except ImportError:  # the stock Inference Endpoints image: no PyAV, but the ffmpeg program
        from .mp4_ffmpeg import encode_mp4_ffmpeg

        return encode_mp4_ffmpeg(frames, fps=fps, crf=crf)

    if not fps or fps <= 0:
        raise ValueError(f"fps must be positive, got {fps!r}")
    if not 0 <= int(crf) <= 51:
        raise ValueError(f"crf must be in 0..51, got {crf!r}")
    crf = int(crf)
    name = choose_encoder(encoder)
    if encoder and name != encoder:
        raise NoH264Encoder(f"encoder {encoder!r} is not usable here (no CUDA, or it fails to open); {name!r} would be")
    rate = Fraction(fps).limit_denominator(1001)

    buf = io.BytesIO()
    count = 0
    # No "+faststart": it rewrites the file by reopening it by name, which an in-memory buffer has not;
    # the index sits at the end, which every player reads once the (small) file is downloaded.
    with av.open(buf, mode="w", format="mp4") as container:
        stream: Any = None
        size = (0, 0)  # (width, height) of the first frame
        for raw in _as_frames(frames):
            arr = _to_uint8_hwc(raw)
            del raw
            if stream is None:
                size = (arr.shape[1], arr.shape[0])
                stream = _open_stream(container, name, rate, size, crf, threads)
            elif (arr.shape[1], arr.shape[0]) != size:
                raise ValueError(f"frame {count} is {arr.shape[1]}x{arr.shape[0]}, the first was {size[0]}x{size[1]}")
            frame = av.VideoFrame.from_ndarray(arr, format="rgb24")
            del arr
            frame.pts = count
            for packet in stream.encode(frame.reformat(format="yuv420p")):
                container.mux(packet)
            count += 1
        if stream is None:
            raise ValueError("no frames to encode")
        for packet in stream.encode(None):  # flush the encoder's delayed frames
            container.mux(packet)
    return buf.getvalue()


def _open_stream(
    container: Any, name: str, rate: Fraction, size: tuple[int, int], crf: int, threads: int | None
) -> Any:
    options_for = _ENCODERS.get(name, (False, _no_options))[1]
    stream = container.add_stream(name, rate=rate, options=options_for(crf))
    stream.width, stream.height = size
    stream.pix_fmt = "yuv420p"
    stream.time_base = Fraction(1, 1) / rate
    stream.codec_context.thread_count = threads if threads is not None else min(os.cpu_count() or 1, 16)
    if name not in ("libx264", "h264_nvenc"):
        stream.bit_rate = _bitrate_for(size[0], size[1], float(rate), crf)
    return stream
