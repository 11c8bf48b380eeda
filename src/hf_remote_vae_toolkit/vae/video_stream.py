"""Streamed video decode: frames leave the server as they are decoded, host memory bounded by a chunk.

Three pieces, each usable alone:

- ``chunked_decode(vae, z)``: the decoder run over the latent in temporal chunks, yielding raw decoder output
  ``[B, 3, f, H, W]`` chunk by chunk, equal to ``vae.decode(z).sample`` cut along frames. Wan 2.1: one latent
  frame per chunk (4 frames, the first 1), the causal cache carried across chunks: the same calls in the same
  order as diffusers' one-shot decode, so the frames are bit-equal. HunyuanVideo: diffusers' temporal tiles
  (``tile_sample_min_num_frames`` / ``tile_sample_stride_num_frames``, 16/12 frames), each tile blended with the
  one before as diffusers blends them and sent as soon as its blend is known, so the frames equal diffusers'
  framewise (tiled) decode. Spatial tiling inside a chunk is kept (HunyuanVideo); a Wan decode over the memory
  budget runs diffusers' spatially tiled decode whole and is then sent in chunks (same frames, no memory bound).
- ``Mp4Fragments``: a fragmented MP4 (``movflags=empty_moov+default_base_moof+frag_keyframe``, and a fragment
  every ``FRAGMENT_S`` of video) written frame by frame to a callback, with the same H.264 encoder and options
  as ``mp4.encode_mp4`` (x264's look-ahead is 8 frames there, so frames leave about 8 frames behind the decode).
  The header (``ftyp`` + an empty ``moov``) goes out with the first chunk.
- ``VideoStream``: the ``contract.StreamedBody`` the server sends. ``produce()`` runs the decode on the GPU worker
  and puts each chunk (host uint8 frames) into a queue of ``QUEUE_CHUNKS``; for MP4 an encoder thread turns them
  into MP4 bytes (compressed, ~1 % of the frames) that wait for the client, so a slow client never holds up the
  GPU; raw frames wait in the bounded queue, and a client that reads nothing for ``STALL_TIMEOUT_S`` loses the
  stream. ``close()`` (the client left) stops the decode at its next chunk.
"""

from __future__ import annotations

import collections
import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np
import torch

from .. import protocol
from ..contract import Output
from ..errors import InvalidRequest
from ..protocol import HEADER_DTYPE, HEADER_SHAPE, HEADER_TILED, TENSOR_BINARY, VIDEO_MP4, dtype_name, tensor_to_bytes
from .latents import apply_decode_scaling
from .mp4 import _open_stream, _to_uint8_hwc, choose_encoder

__all__ = [
    "chunked_decode",
    "Mp4Fragments",
    "VideoStream",
    "StreamRecord",
    "StreamFailed",
    "QUEUE_CHUNKS",
    "STALL_TIMEOUT_S",
    "MP4_MOVFLAGS",
    "uint8_frames",
    "wants_stream",
    "stream_output",
    "count_chunks",
    "HEADER_FRAMES",
    "STREAMABLE",
]

log = logging.getLogger("hf_remote_vae_toolkit")

#: Chunks of decoded frames that may wait between the decoder and the encoder / the client.
QUEUE_CHUNKS = 2
#: Seconds a raw-frame stream waits for a client that reads nothing before giving up (freeing the GPU).
STALL_TIMEOUT_S = 60.0
MP4_MOVFLAGS = "empty_moov+default_base_moof+frag_keyframe"
#: A fragment at least every this many seconds of video (and at every keyframe), so fragments follow the decode.
FRAGMENT_S = 0.25


#: Response header: the number of frames the stream carries (every streamed response has it).
HEADER_FRAMES = protocol.HEADER_FRAMES
#: Outputs that are frame-major and can be sent frame by frame (``raw`` is ``[B, 3, F, H, W]``: it is not).
STREAMABLE = ("mp4", "uint8", "unit")


class StreamFailed(RuntimeError):
    """The stream could not be completed (the decode or the encode failed); the body is truncated."""


# --------------------------------------------------------------------------- chunked decode


def chunked_decode(vae: Any, z: torch.Tensor) -> Iterator[torch.Tensor]:
    """Latents ``[B, C, T, h, w]`` (scaled, model dtype and device) -> raw decoder output chunks
    ``[B, 3, f, H, W]`` whose concatenation along frames is what ``vae.decode(z).sample`` returns.

    Runs under the caller's ``torch.inference_mode()`` and model lock; ``vae.use_tiling`` is honoured as
    diffusers honours it. The decoder's state (Wan's causal cache) is reset before and after.
    """
    kind = type(vae).__name__
    if kind == "AutoencoderKLWan":
        yield from _wan_chunks(vae, z)
    elif kind == "AutoencoderKLHunyuanVideo":
        yield from _hunyuan_chunks(vae, z)
    else:  # any other video VAE: one chunk, the whole decode
        yield vae.decode(z).sample


def _wan_chunks(vae: Any, z: torch.Tensor) -> Iterator[torch.Tensor]:
    latent_h, latent_w = z.shape[-2:]
    ratio = vae.spatial_compression_ratio
    if vae.use_tiling and (
        latent_w > vae.tile_sample_min_width // ratio or latent_h > vae.tile_sample_min_height // ratio
    ):
        # diffusers' spatially tiled Wan decode walks every tile through all frames: no temporal chunks there
        video = vae.decode(z).sample
        for start in range(0, video.shape[2], 4):
            yield video[:, :, start : start + 4]
        return
    patch_size = vae.config.patch_size
    vae.clear_cache()
    try:
        x = vae.post_quant_conv(z)  # a 1x1x1 causal conv: per frame, as in diffusers
        for i in range(z.shape[2]):
            vae._conv_idx = [0]
            kwargs = {"first_chunk": True} if i == 0 else {}
            out = vae.decoder(x[:, :, i : i + 1], feat_cache=vae._feat_map, feat_idx=vae._conv_idx, **kwargs)
            if patch_size is not None:
                from diffusers.models.autoencoders.autoencoder_kl_wan import unpatchify

                out = unpatchify(out, patch_size=patch_size)
            yield torch.clamp(out, min=-1.0, max=1.0)
    finally:
        vae.clear_cache()


def _hunyuan_chunks(vae: Any, z: torch.Tensor) -> Iterator[torch.Tensor]:
    frames = z.shape[2]
    tf = vae.temporal_compression_ratio
    tile_frames = vae.tile_sample_min_num_frames // tf
    if not (vae.use_framewise_decoding and frames > tile_frames):
        yield vae.decode(z).sample  # short enough for one piece, as diffusers decodes it
        return
    ratio = vae.spatial_compression_ratio
    stride = vae.tile_sample_stride_num_frames // tf
    blend = vae.tile_sample_min_num_frames - vae.tile_sample_stride_num_frames
    out_stride = vae.tile_sample_stride_num_frames
    total = (frames - 1) * tf + 1
    sent = 0
    previous: torch.Tensor | None = None
    for i in range(0, frames, stride):
        tile = z[:, :, i : i + tile_frames + 1]
        spatial = (
            tile.shape[-1] > vae.tile_sample_min_width // ratio or tile.shape[-2] > vae.tile_sample_min_height // ratio
        )
        if vae.use_tiling and spatial:
            decoded = vae.tiled_decode(tile, return_dict=True).sample
        else:
            decoded = vae.decoder(vae.post_quant_conv(tile))
        if previous is None:
            keep = decoded[:, :, : out_stride + 1]
        else:
            decoded = decoded[:, :, 1:]
            decoded = vae.blend_t(previous, decoded, blend)  # in place, as diffusers blends its row of tiles
            keep = decoded[:, :, :out_stride]
        previous = decoded
        keep = keep[:, :, : total - sent]
        if keep.shape[2]:
            sent += keep.shape[2]
            yield keep


# --------------------------------------------------------------------------- fragmented MP4


class Mp4Fragments:
    """Write RGB frames as a fragmented MP4 to ``sink`` (called with each piece of the file, in order).

    ``write(frames)`` takes uint8 ``[f, H, W, 3]`` (or one ``[H, W, 3]`` frame); ``close()`` flushes the encoder
    and the last fragment. The concatenated pieces are a complete MP4 any player reads from the start.
    """

    def __init__(self, sink: Callable[[bytes], None], *, fps: float, crf: int) -> None:
        if not fps or fps <= 0:
            raise ValueError(f"fps must be positive, got {fps!r}")
        self._sink = sink
        self._rate = Fraction(fps).limit_denominator(1001)
        self._crf = int(crf)
        self._encoder = choose_encoder()
        self._container: Any = None
        self._stream: Any = None
        self._size = (0, 0)
        self.frames = 0

    def write(self, frames: Any) -> None:
        import av

        batch = frames if getattr(frames, "ndim", 0) == 4 else [frames]
        for raw in batch:
            arr = _to_uint8_hwc(raw)
            if self._stream is None:
                self._open(arr.shape[1], arr.shape[0])
            elif (arr.shape[1], arr.shape[0]) != self._size:
                raise ValueError(f"frame {self.frames} is {arr.shape[1]}x{arr.shape[0]}, the first was {self._size}")
            frame = av.VideoFrame.from_ndarray(arr, format="rgb24")
            frame.pts = self.frames
            for packet in self._stream.encode(frame.reformat(format="yuv420p")):
                self._container.mux(packet)
            self.frames += 1

    def _open(self, width: int, height: int) -> None:
        import av

        options = {"movflags": MP4_MOVFLAGS, "frag_duration": str(int(FRAGMENT_S * 1e6))}
        self._container = av.open(_Sink(self._sink), mode="w", format="mp4", options=options)
        self._size = (width, height)
        # the plain file's encoder and options (mp4.py: x264 with an 8-frame look-ahead)
        self._stream = _open_stream(self._container, self._encoder, self._rate, self._size, self._crf, None)
        self._container.start_encoding()  # ftyp + empty moov: the first bytes, before any frame is encoded

    def abort(self) -> None:
        """Stop without flushing (the reader is gone)."""
        if self._container is not None:
            try:
                self._container.close()
            except Exception:  # an unfinished file may fail to close cleanly; nobody reads it
                pass
            self._container = None

    def close(self) -> None:
        if self._container is None:
            raise ValueError("no frames to encode")
        try:
            for packet in self._stream.encode(None):
                self._container.mux(packet)
        finally:
            self._container.close()
            self._container = None


class _Sink:
    """The file object PyAV writes to: every write goes straight to the callback (no seeking needed)."""

    def __init__(self, sink: Callable[[bytes], None]) -> None:
        self._sink = sink

    def write(self, data: Any) -> int:
        piece = bytes(data)
        if piece:
            self._sink(piece)
        return len(piece)


# --------------------------------------------------------------------------- the streamed body

_END = object()


@dataclass
class StreamRecord:
    """How one stream ended: chunks decoded of the total, and ``outcome`` ``done`` | ``closed`` | ``failed``."""

    media_type: str
    chunks_decoded: int = 0
    chunks_total: int = 0
    frames: int = 0
    outcome: str = "running"
    seconds: float = 0.0


class VideoStream:
    """A ``contract.StreamedBody`` over a chunked decode (see the module docstring).

    ``chunks``: called on the GPU worker, returns the iterator of raw decoder chunks (it holds the model lock
    while it runs). ``convert``: a raw chunk -> host data: uint8 ``[f, H, W, 3]`` numpy frames for MP4, bytes
    for a raw-frame stream. ``mp4``: ``(fps, crf)`` to encode, or None to send the converted bytes as they are.
    ``on_end``: called with the ``StreamRecord`` when the stream is over (from the worker thread).
    """

    def __init__(
        self,
        chunks: Callable[[], Iterator[torch.Tensor]],
        convert: Callable[[torch.Tensor], Any],
        *,
        media_type: str,
        record: StreamRecord,
        mp4: tuple[float, int] | None = None,
        on_end: Callable[[StreamRecord], None] | None = None,
        stall_timeout_s: float = STALL_TIMEOUT_S,
    ) -> None:
        self.media_type = media_type
        self.record = record
        self._chunks = chunks
        self._convert = convert
        self._mp4 = mp4
        self._on_end = on_end
        self._stall = stall_timeout_s
        self._closed = threading.Event()
        self._frames: queue.Queue[Any] = queue.Queue(maxsize=QUEUE_CHUNKS)  # decoder -> encoder / client
        # MP4: encoder -> client, compressed, unbounded (the GPU never waits for the network); raw: unused
        self._bytes: queue.Queue[Any] = queue.Queue()
        self._encoder: threading.Thread | None = None

    # ------------------------------------------------------------------ the worker's side

    def produce(self) -> None:
        started = time.monotonic()
        record = self.record
        if self._mp4 is not None:
            self._encoder = threading.Thread(target=self._encode, name="mp4-stream", daemon=True)
            self._encoder.start()
        try:
            complete = False
            if not self._closed.is_set():
                chunks = self._chunks()
                try:
                    for chunk in chunks:
                        record.chunks_decoded += 1
                        record.frames += int(chunk.shape[2])
                        item = self._convert(chunk)
                        del chunk
                        if not self._put(item) or self._closed.is_set():
                            break
                    else:
                        complete = True
                finally:
                    close = getattr(chunks, "close", None)
                    if close is not None:
                        close()  # releases the model lock and the decoder's cache at once
            # done: every chunk was decoded and handed over. A reader that has all it needs (a tensor body with its
            # Content-Length) may close before it reads the end marker: that does not make the stream "closed".
            complete = complete or (record.chunks_total > 0 and record.chunks_decoded >= record.chunks_total)
            record.outcome = "done" if complete else "closed"
            if complete:
                self._put(_END)
        except Exception as exc:  # reported to the reader, which ends the connection
            record.outcome = "failed"
            log.error("the streamed decode failed after %d chunks", record.chunks_decoded, exc_info=True)
            self._put(
                StreamFailed(f"the decode failed after {record.frames} frames: {type(exc).__name__}: {exc}"), force=True
            )
        record.seconds = time.monotonic() - started
        if self._on_end is not None:
            self._on_end(record)

    def _put(self, item: Any, force: bool = False) -> bool:
        """Hand a chunk on; False when the stream was closed meanwhile (or the reader stalled)."""
        waited = 0.0
        while not self._closed.is_set() or force:
            try:
                self._frames.put(item, timeout=0.1)
                return True
            except queue.Full:
                waited += 0.1
                if force and self._closed.is_set():
                    return False
                if waited >= self._stall:
                    log.warning("a streamed video: nothing read for %.0f s; the stream is stopped", waited)
                    self.close()
                    return False
        return False

    def _encode(self) -> None:
        """The MP4 encoder thread: frames from the decoder -> MP4 pieces for the client."""
        assert self._mp4 is not None
        fps, crf = self._mp4
        try:
            writer = Mp4Fragments(self._bytes.put, fps=fps, crf=crf)
            while True:
                try:
                    item = self._frames.get(timeout=0.5)
                except queue.Empty:
                    if self._closed.is_set():
                        break
                    continue
                if item is _END or self._closed.is_set():
                    break
                if isinstance(item, BaseException):  # the decode failed: pass it on, drop the unfinished file
                    self._bytes.put(item)
                    writer.abort()
                    return
                writer.write(item)
            if self._closed.is_set():
                writer.abort()
                return
            writer.close()
            self._bytes.put(_END)
        except Exception as exc:
            log.error("the MP4 encode of a streamed video failed", exc_info=True)
            # the error first (the reader raises it after the pieces before it), then stop the decode
            self._bytes.put(StreamFailed(f"the MP4 encode failed: {type(exc).__name__}: {exc}"))
            self._closed.set()
            _drain(self._frames)

    # ------------------------------------------------------------------ the client's side

    def __iter__(self) -> Iterator[bytes]:
        source = self._bytes if self._mp4 is not None else self._frames
        while True:
            try:
                item = source.get(timeout=0.5)
            except queue.Empty:
                if self._closed.is_set():
                    return
                continue
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        # wake a producer blocked on a full queue and drop what nobody will read
        _drain(self._frames)
        _drain(self._bytes)
        if self._mp4 is not None:
            try:
                self._frames.put_nowait(_END)  # wake the encoder thread
            except queue.Full:
                pass


def _drain(q: queue.Queue[Any]) -> None:
    try:
        while True:
            q.get_nowait()
    except queue.Empty:
        pass


def uint8_frames(chunk: torch.Tensor) -> np.ndarray:
    """A raw chunk ``[B, 3, f, H, W]`` -> uint8 ``[f, H, W, 3]`` host frames of the first item."""
    from .postprocess import to_uint8

    return to_uint8(chunk[0].transpose(0, 1)).cpu().numpy()


def count_chunks(vae: Any, latent_frames: int) -> int:
    """How many chunks ``chunked_decode`` yields for ``latent_frames`` (tiling as the VAE is set now)."""
    kind = type(vae).__name__
    tf = int(getattr(vae, "temporal_compression_ratio", 4))
    total = (latent_frames - 1) * tf + 1
    if kind == "AutoencoderKLWan":
        return latent_frames if not vae.use_tiling else -(-total // 4)
    if kind == "AutoencoderKLHunyuanVideo":
        tile_frames = vae.tile_sample_min_num_frames // tf
        if not (vae.use_framewise_decoding and latent_frames > tile_frames):
            return 1
        stride = vae.tile_sample_stride_num_frames // tf
        out_stride = vae.tile_sample_stride_num_frames
        sent = count = 0
        for i in range(0, latent_frames, stride):
            size = min(tile_frames + 1, latent_frames - i)
            frames = (size - 1) * tf + 1 if i == 0 else (size - 1) * tf
            keep = min(out_stride + (1 if i == 0 else 0), frames, total - sent)
            if keep > 0:
                sent += keep
                count += 1
        return count
    return 1


# --------------------------------------------------------------------------- the handler's side


def wants_stream(params: Mapping[str, Any], accept: str | None, output: str) -> bool:
    """Whether a video request is streamed (docs/protocol.md: streamed video).

    ``stream`` unset: MP4 is streamed to clients that ask for ``video/mp4`` (ours), and sent whole to the rest
    (diffusers asks with ``text/plain`` and reads the whole body; ``*/*`` gets the plain file too); tensor
    outputs are sent whole. ``stream=true`` streams MP4 for any Accept, and uint8 / [0, 1] frames as
    ``tensor/binary``; ``stream=false`` never streams.
    """
    value = params.get("stream")
    if value is None:
        return output == "mp4" and accept == VIDEO_MP4
    if not isinstance(value, bool):
        raise InvalidRequest(f"stream must be true or false, got {value!r}")
    if not value:
        return False
    if output not in STREAMABLE:
        raise InvalidRequest(
            "stream=true sends frames in order, and output_type=pt without partial_postprocess is the raw "
            "[B, 3, F, H, W] tensor, which is not frame-major: add partial_postprocess=true (uint8 [F, H, W, 3]), "
            "or ask for output_type=mp4"
        )
    if output != "mp4" and accept not in (None, TENSOR_BINARY):
        raise InvalidRequest(f"streamed frames are sent as tensor/binary, not {accept}: send Accept: tensor/binary")
    return True


def stream_output(handler: Any, req: Any, *, tiled: bool) -> Output:
    """The streamed ``Output`` of a ``VideoDecodeHandler`` request (first batch item, as the whole outputs)."""
    loaded = handler.loaded
    vae = loaded.vae
    _, _, latent_frames, lh, lw = (int(d) for d in req.latents.shape)
    frames = (latent_frames - 1) * loaded.family.temporal_factor + 1
    height, width = lh * loaded.family.spatial_factor, lw * loaded.family.spatial_factor

    def chunks() -> Iterator[torch.Tensor]:
        z = apply_decode_scaling(req.latents[:1].to(loaded.device, loaded.dtype), req.scaling)
        with handler._lock, torch.inference_mode():
            if tiled:
                vae.enable_tiling()  # keeps the sizes the handler configured
            try:
                yield from chunked_decode(vae, z)
            finally:
                if tiled:
                    vae.disable_tiling()

    headers = {HEADER_FRAMES: str(frames)}
    if tiled:
        headers[HEADER_TILED] = "1"
    mp4: tuple[float, int] | None = None
    convert: Callable[[torch.Tensor], Any]
    if req.output == "mp4":
        media_type, convert, mp4 = VIDEO_MP4, _mp4_frames, (req.fps, req.crf)
    elif req.output == "uint8":
        media_type, convert = TENSOR_BINARY, _uint8_bytes
        headers[HEADER_SHAPE] = json.dumps([frames, height, width, 3], separators=(",", ":"))
        headers[HEADER_DTYPE] = "uint8"
        headers["content-length"] = str(frames * height * width * 3)
    else:  # unit: float [F, 3, H, W] in [0, 1], the model dtype
        media_type, convert = TENSOR_BINARY, _unit_bytes
        headers[HEADER_SHAPE] = json.dumps([frames, 3, height, width], separators=(",", ":"))
        headers[HEADER_DTYPE] = dtype_name(loaded.dtype)
        headers["content-length"] = str(frames * 3 * height * width * loaded.dtype.itemsize)
    if tiled:
        vae.enable_tiling()
    try:
        total = count_chunks(vae, latent_frames)
    finally:
        if tiled:
            vae.disable_tiling()
    record = StreamRecord(media_type=media_type, chunks_total=total)
    history = handler.__dict__.setdefault("stream_history", collections.deque(maxlen=32))
    stream = VideoStream(chunks, convert, media_type=media_type, record=record, mp4=mp4, on_end=history.append)
    return Output(None, headers=headers, media_type=media_type, stream=stream)


def _mp4_frames(chunk: torch.Tensor) -> np.ndarray:
    return uint8_frames(chunk)


def _uint8_bytes(chunk: torch.Tensor) -> bytes:
    return uint8_frames(chunk).tobytes()


def _unit_bytes(chunk: torch.Tensor) -> bytes:
    from .postprocess import to_unit

    return tensor_to_bytes(to_unit(chunk[0].transpose(0, 1)).contiguous())
