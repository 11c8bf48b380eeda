"""Section 1: what the HTTP round trip adds to a decode.

The same weight files answer both sides: a handler called in-process, its result serialised with the
server's own ``encode_response`` (the decode, postprocess and image or tensor encoding: the exact
response body, nothing else), and ``hf-remote-vae serve`` in a child process over loopback HTTP through our ``remote_decode`` (the client's
tensor-to-bytes, the request, query parsing, the scheduler's hop to its worker thread, the response
body, and the client's parsing or image decoding). The outputs are checked equal once, so both
sides did the same work.

The decode dominates both sides and its time varies from call to call far more than the few
milliseconds HTTP adds, so "added" is measured per request: the round trip minus the server's own
handler time for that request (``hf_vae_handler_seconds_sum`` before and after, from ``/metrics``),
minus the response encoding (which the server does outside the handler; its in-process time is
used), and the overhead ratio is (in-process + added) / in-process. The raw medians of both sides are
reported too; they were timed alternately.
"""

from __future__ import annotations

import io
import statistics
import time
from typing import Any

import numpy as np
import torch
from PIL import Image

from hf_remote_vae_toolkit import protocol
from hf_remote_vae_toolkit.client import new_session, remote_decode
from hf_remote_vae_toolkit.server.codecs import encode_response

from .common import read_metrics
from .encoding import ANCHOR_DECODE_MS
from .outputs import OUTPUT_TYPES, SD_SCALING

__all__ = ["run_overhead"]


def _as_array(value: Any) -> np.ndarray:
    """A comparable array from either side: an encoded response ``(body, type, headers)``, a PIL image or a tensor."""
    if isinstance(value, tuple):
        body, content_type, headers = value
        if content_type.startswith("image/"):
            value = Image.open(io.BytesIO(body))
        else:
            value = protocol.tensor_from_response(body, headers)
    if isinstance(value, Image.Image):
        return np.asarray(value.convert("RGB"))
    return value.float().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)


def _measure(local: Any, remote: Any, url: str, repeats: int, encode_ms: list[float]) -> dict[str, float]:
    """Medians of: in-process ms, round-trip ms, the server's handler ms, and what HTTP adds.

    ``encode_ms`` collects the in-process response-encoding times (``local`` appends to it). The
    server encodes images outside the handler (off the GPU worker), so the round trip minus the
    handler time still holds that encoding; the in-process encode time is taken off to leave only
    what HTTP adds.
    """
    inproc, http, handler, outside = [], [], [], []
    for i in range(repeats):
        if i % 2 == 0:  # alternate which side goes first
            inproc.append(_ms(local))
        before = read_metrics(url, "hf_vae_handler_seconds_sum")[0]
        round_trip = _ms(remote)
        server = (read_metrics(url, "hf_vae_handler_seconds_sum")[0] - before) * 1000
        http.append(round_trip)
        handler.append(server)
        outside.append(round_trip - server)
        if i % 2 == 1:
            inproc.append(_ms(local))
    medians = {"inproc": inproc, "http": http, "handler": handler, "outside": outside, "encode": encode_ms}
    result = {name: statistics.median(values) for name, values in medians.items()}
    result["added"] = result["outside"] - result["encode"]
    return result


def _ms(fn: Any) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000


def run_overhead(handler: Any, url: str, sizes: list[int], repeats: dict[int, int], log: Any) -> list[dict[str, Any]]:
    """Rows of ``{size, output, inproc_ms, http_ms, added_ms, ratio, same_output}`` for each size and output type."""
    rows = []
    session = new_session(pool_size=1)
    for size in sizes:
        latents = torch.randn(1, 4, size // 8, size // 8, generator=torch.Generator().manual_seed(size)).half()
        for out in OUTPUT_TYPES.values():
            if not out.client:
                continue

            encode_ms: list[float] = []

            def local(out: Any = out, latents: torch.Tensor = latents, encode_ms: list[float] = encode_ms) -> Any:
                result = out.run(handler, latents)
                start = time.perf_counter()
                body = encode_response(result, out.accept, stock=False)
                encode_ms.append((time.perf_counter() - start) * 1000)
                return body

            def remote(out: Any = out, latents: torch.Tensor = latents) -> Any:
                return remote_decode(
                    url, latents, scaling_factor=SD_SCALING, session=session, retries=2, **out.client_kwargs
                )

            same = bool(np.array_equal(_as_array(local()), _as_array(remote())))  # doubles as the warm-up
            encode_ms.clear()
            t = _measure(local, remote, url, repeats[size], encode_ms)
            row = {
                "size": size,
                "output": out.name,
                "inproc_ms": round(t["inproc"], 2),
                "http_ms": round(t["http"], 2),
                "server_handler_ms": round(t["handler"], 2),
                "encode_ms": round(t["encode"], 2),
                "added_ms": round(t["added"], 2),
                "ratio": round((t["inproc"] + t["added"]) / t["inproc"], 3),
                # The same added milliseconds next to the real decoder on an H100 (docs/reference-figures.md): a projection.
                "ratio_h100": round(1 + t["added"] / ANCHOR_DECODE_MS[size], 3) if size in ANCHOR_DECODE_MS else None,
                "same_output": same,
                "repeats": repeats[size],
            }
            log(row)
            rows.append(row)
    session.close()
    return rows
