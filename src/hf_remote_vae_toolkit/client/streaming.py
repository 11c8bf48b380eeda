"""Streamed video decode: the MP4 written to a file as it arrives, or frames handed over as they are decoded.

The server sends a video while its decoder is still running (docs/protocol.md: streamed video): a fragmented MP4
to a client that asks with ``Accept: video/mp4``, or, with ``stream=true``, the uint8 frames ``[F, H, W, 3]`` as a
``tensor/binary`` body whose bytes arrive frame by frame. Two calls here use that:

- ``stream_decode_to_file(endpoint, latents, "out.mp4")``: writes ``out.mp4.part`` as bytes arrive (``progress``
  gets the bytes so far, or ``True`` shows a tqdm bar) and renames it when the stream is complete;
- ``iter_decode_frames(endpoint, latents)``: yields uint8 ``[H, W, 3]`` numpy frames as they arrive.

The status code goes out before the first frame, so a failure during the decode cannot turn into a 500: the
server ends the connection early instead. Both calls detect that (a chunked body that never ends, or fewer bytes
than ``shape`` announced) and raise ``StreamTruncated`` naming the request id (the server's log has the reason);
the partial file is removed. Errors before the stream starts are the usual ``ServiceError`` subclasses, retried
as ``remote_decode`` retries them. Closing the iterator (or an exception in ``progress``) closes the connection,
and the server stops the decode.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import requests

from .. import protocol
from ..errors import ServiceError
from ..protocol import HEADER_REQUEST_ID, TENSOR_BINARY, VIDEO_MP4
from ._arrays import array_bytes, wire_dtype
from ._errors import ClientConnectionError, ClientTimeout
from ._http import RetriesArg, TimeoutArg, TokenArg, post

__all__ = ["stream_decode_to_file", "iter_decode_frames", "StreamTruncated", "StreamResult", "HEADER_FRAMES"]

HEADER_FRAMES = protocol.HEADER_FRAMES


class StreamTruncated(ClientConnectionError):
    """The server started the stream and ended it early (its decode or encode failed, or it went away)."""


@dataclass(frozen=True)
class StreamResult:
    """A completed streamed download: where it is, how big, how many frames, and the request id."""

    path: Path
    bytes: int
    frames: int | None
    request_id: str
    seconds: float
    first_byte_s: float


def _params(
    tensor: Any,
    output: str,
    *,
    do_scaling: bool,
    scaling_factor: float | None,
    shift_factor: float | None,
    fps: float | None,
    crf: int | None,
) -> dict[str, Any]:
    if getattr(tensor, "ndim", 0) != 5:
        raise ValueError(f"a streamed decode takes video latents [B, C, T, h, w], got shape {list(tensor.shape)}")
    params: dict[str, Any] = {"shape": list(tensor.shape), "dtype": wire_dtype(tensor)}
    if output == "mp4":
        params["output_type"] = "mp4"
    else:
        params.update(output_type="pt", partial_postprocess=True, stream=True)
    if do_scaling and scaling_factor is not None:
        params["scaling_factor"] = scaling_factor
    if do_scaling and shift_factor is not None:
        params["shift_factor"] = shift_factor
    if do_scaling and scaling_factor is None:
        params["do_scaling"] = True
    if fps is not None:
        params["fps"] = fps
    if crf is not None:
        params["crf"] = crf
    return params


def _open(
    endpoint: str,
    tensor: Any,
    params: Mapping[str, Any],
    accept: str,
    *,
    timeout: TimeoutArg,
    retries: RetriesArg,
    token: TokenArg,
    session: requests.Session | None,
) -> tuple[requests.Response, str]:
    """POST and return the open (unread) 200 response and the request id; errors before the body as usual
    (``_http.post``: its retries, timeouts and typed errors)."""
    response = post(
        endpoint,
        data=array_bytes(tensor),
        params=params,
        headers={"Content-Type": TENSOR_BINARY, "Accept": accept},
        timeout=timeout,
        retries=retries,
        token=token,
        session=session,
        stream=True,
    )
    return response, response.headers.get(HEADER_REQUEST_ID) or str(response.request.headers[HEADER_REQUEST_ID])


def _chunks(response: requests.Response, request_id: str, what: str, size: int | None) -> Iterator[bytes]:
    """The body's pieces (``size`` bytes each, or each HTTP chunk as it arrives when None); a body cut short
    raises ``StreamTruncated``."""
    received = 0
    try:
        for piece in response.iter_content(size):
            received += len(piece)
            yield piece
    except (requests.exceptions.ChunkedEncodingError, requests.exceptions.ConnectionError) as exc:
        raise StreamTruncated(
            f"the server ended the {what} after {received} bytes without finishing it (its decode failed or it "
            f"went away; the server log has the reason): {type(exc).__name__}",
            request_id=request_id,
        ) from None
    except requests.Timeout as exc:
        raise ClientTimeout(f"the {what} stalled after {received} bytes: {exc}", request_id=request_id) from None


def _frames_header(response: requests.Response) -> int | None:
    raw = response.headers.get(HEADER_FRAMES)
    return int(raw) if raw and raw.isdigit() else None


def stream_decode_to_file(
    endpoint: str,
    tensor: Any,
    path: str | os.PathLike[str],
    *,
    do_scaling: bool = True,
    scaling_factor: float | None = None,
    shift_factor: float | None = None,
    fps: float | None = None,
    crf: int | None = None,
    progress: Callable[[int], Any] | bool | None = None,
    timeout: TimeoutArg = None,
    retries: RetriesArg = 3,
    token: TokenArg = None,
    session: requests.Session | None = None,
) -> StreamResult:
    """Decode video latents ``[B, C, T, h, w]`` remotely into the MP4 file ``path``, written as it streams in.

    Scaling arguments mean what they mean in ``remote_decode`` (``do_scaling`` without ``scaling_factor``: the
    model's own). ``fps`` / ``crf``: the server's defaults when None. ``progress``: called with the bytes
    received so far after each piece, or ``True`` for a tqdm bar on stderr. Raises ``StreamTruncated`` (the
    partial file is removed) when the server ends the stream early.
    """
    params = _params(
        tensor, "mp4", do_scaling=do_scaling, scaling_factor=scaling_factor, shift_factor=shift_factor, fps=fps, crf=crf
    )
    target = Path(path)
    partial = target.with_name(target.name + ".part")
    started = time.perf_counter()
    response, request_id = _open(
        endpoint, tensor, params, VIDEO_MP4, timeout=timeout, retries=retries, token=token, session=session
    )
    bar = None
    callback: Callable[[int], Any] | None = progress if callable(progress) else None
    if progress is True:
        from tqdm import tqdm

        bar = tqdm(unit="B", unit_scale=True, desc=target.name, leave=False)
    written = 0
    first: float | None = None
    try:
        with open(partial, "wb") as out:
            for piece in _chunks(response, request_id, "video stream", None):
                if first is None:
                    first = time.perf_counter() - started
                out.write(piece)
                written += len(piece)
                if bar is not None:
                    bar.update(len(piece))
                if callback is not None:
                    callback(written)
        os.replace(partial, target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    finally:
        response.close()
        if bar is not None:
            bar.close()
    return StreamResult(
        path=target,
        bytes=written,
        frames=_frames_header(response),
        request_id=request_id,
        seconds=time.perf_counter() - started,
        first_byte_s=first if first is not None else 0.0,
    )


def iter_decode_frames(
    endpoint: str,
    tensor: Any,
    *,
    do_scaling: bool = True,
    scaling_factor: float | None = None,
    shift_factor: float | None = None,
    timeout: TimeoutArg = None,
    retries: RetriesArg = 3,
    token: TokenArg = None,
    session: requests.Session | None = None,
) -> Iterator[np.ndarray]:
    """Decode video latents ``[B, C, T, h, w]`` remotely; yield uint8 ``[H, W, 3]`` frames (first batch item) as
    they arrive, bit-equal to ``remote_decode(..., output_type="pt", partial_postprocess=True)``.

    Raises ``StreamTruncated`` when the stream ends before the frames ``shape`` announced. Closing the generator
    early closes the connection; the server then stops the decode.
    """
    params = _params(
        tensor,
        "frames",
        do_scaling=do_scaling,
        scaling_factor=scaling_factor,
        shift_factor=shift_factor,
        fps=None,
        crf=None,
    )
    response, request_id = _open(
        endpoint, tensor, params, TENSOR_BINARY, timeout=timeout, retries=retries, token=token, session=session
    )
    try:
        try:
            frames, height, width, channels = (int(d) for d in json.loads(response.headers["shape"]))
        except (KeyError, ValueError, TypeError):
            raise ClientConnectionError(
                f"the server did not stream frames (no [F, H, W, 3] shape header; got {response.headers.get('shape')!r}): "
                "is it a video endpoint of this toolkit?",
                request_id=request_id,
            ) from None
        size = height * width * channels
        pending = bytearray()
        count = 0
        try:
            for piece in _chunks(response, request_id, "frame stream", size):
                pending += piece
                while len(pending) >= size and count < frames:
                    # a bytearray slice is a fresh writable copy: the frame owns its memory
                    frame = np.frombuffer(pending[:size], dtype=np.uint8).reshape(height, width, channels)
                    del pending[:size]
                    count += 1
                    yield frame
        except StreamTruncated as exc:
            raise StreamTruncated(f"{exc.message} ({count} of {frames} frames came)", request_id=request_id) from None
        if count < frames:
            raise StreamTruncated(
                f"the frame stream ended after {count} of {frames} frames (the server's log has the reason)",
                request_id=request_id,
            )
    finally:
        response.close()


def run_streamed_mp4(args: Any, jobs: list[Any]) -> int:
    """``hf-remote-vae decode ... -o out.mp4``: each video streamed into its file, one at a time, with a progress
    bar in bytes (``--no-progress``: none). Exit 0 if all succeeded, 1 if any failed."""
    failed = 0
    for job in jobs:
        scaling: dict[str, Any] = {
            "do_scaling": not args.no_scaling,
            "scaling_factor": args.scaling_factor,
            "shift_factor": args.shift_factor,
        }
        if job.vae_space:  # ComfyUI latents: already in the VAE's space
            scaling = {"do_scaling": False, "scaling_factor": None, "shift_factor": None}
        job.out.parent.mkdir(parents=True, exist_ok=True)
        try:
            result = stream_decode_to_file(
                args.endpoint,
                job.tensor,
                job.out,
                progress=not args.no_progress,
                timeout=args.timeout,
                retries=args.retries,
                token=args.token,
                **scaling,
            )
        except (ServiceError, ValueError, OSError) as exc:
            failed += 1
            print(f"error: {job.source}: {exc}", file=sys.stderr)
            continue
        print(result.path)
    return 1 if failed else 0
