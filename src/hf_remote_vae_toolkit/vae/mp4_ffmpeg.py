"""MP4 through the ``ffmpeg`` program, for hosts without PyAV (the stock Inference Endpoints image has the
``ffmpeg`` binary but not the ``av`` package).

Same contract as ``mp4.encode_mp4``: uint8 RGB frames in, H.264 yuv420p MP4 bytes out, frames pulled one at
a time (each is written to ffmpeg's stdin as it comes, so host memory stays at one frame). The program is
``FFMPEG_BINARY`` if set, else ``ffmpeg`` on ``PATH``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["ffmpeg_binary", "encode_mp4_ffmpeg"]


def ffmpeg_binary() -> str | None:
    """The ffmpeg program to run, or None when there is none."""
    configured = os.environ.get("FFMPEG_BINARY")
    if configured:
        return configured if Path(configured).is_file() else shutil.which(configured)
    return shutil.which("ffmpeg")


def _frames(frames: Any) -> Iterable[Any]:
    if hasattr(frames, "ndim") and frames.ndim == 4:
        return (frames[i] for i in range(frames.shape[0]))
    return frames


def _hwc_uint8(frame: Any) -> np.ndarray:
    if hasattr(frame, "detach"):
        frame = frame.detach().cpu().numpy()
    arr = np.ascontiguousarray(frame)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"frames must be uint8 [H, W, 3], got {arr.dtype} {list(arr.shape)}")
    return arr


def encode_mp4_ffmpeg(frames: Iterable[Any] | Any, fps: float = 15, crf: int = 18) -> bytes:
    """uint8 ``[H, W, 3]`` frames -> H.264 yuv420p MP4 bytes via the ffmpeg program (libx264)."""
    program = ffmpeg_binary()
    if program is None:
        raise RuntimeError("MP4 needs PyAV (pip install av) or the ffmpeg program on PATH (or FFMPEG_BINARY)")
    if not fps or fps <= 0:
        raise ValueError(f"fps must be positive, got {fps!r}")
    if not 0 <= int(crf) <= 51:
        raise ValueError(f"crf must be in 0..51, got {crf!r}")
    with tempfile.TemporaryDirectory(prefix="hf-remote-vae-mp4-") as tmp:
        out = Path(tmp) / "video.mp4"
        proc: subprocess.Popen[bytes] | None = None
        size: tuple[int, int] | None = None
        count = 0
        try:
            for raw in _frames(frames):
                arr = _hwc_uint8(raw)
                if proc is None:
                    size = (arr.shape[1], arr.shape[0])
                    # yuv420p needs even sizes: pad by one pixel where needed, as libx264 requires
                    command = [
                        program, "-hide_banner", "-loglevel", "error", "-y",
                        "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{size[0]}x{size[1]}", "-r", repr(float(fps)),
                        "-i", "-",
                        "-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2",
                        "-c:v", "libx264", "-preset", "veryfast", "-crf", str(int(crf)), "-pix_fmt", "yuv420p",
                        "-movflags", "+faststart", str(out),
                    ]  # fmt: skip
                    proc = subprocess.Popen(command, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
                elif (arr.shape[1], arr.shape[0]) != size:
                    raise ValueError(f"frame {count} is {arr.shape[1]}x{arr.shape[0]}, the first was {size}")
                assert proc.stdin is not None
                proc.stdin.write(arr.tobytes())
                count += 1
            if proc is None:
                raise ValueError("no frames to encode")
            assert proc.stdin is not None
            proc.stdin.close()
            errors = proc.stderr.read() if proc.stderr else b""
            if proc.wait() != 0:
                raise RuntimeError(f"ffmpeg failed: {errors.decode(errors='replace').strip()[-500:]}")
            return out.read_bytes()
        finally:
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
