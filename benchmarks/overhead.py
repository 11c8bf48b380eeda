"""Section 1: what the HTTP round trip adds to a decode.

The same weight files answer both sides: a handler called in-process, its result serialised with the
server's own ``encode_response`` (the decode, postprocess and image or tensor encoding: the exact
response body, nothing else), and ``hf-remote-vae serve`` in a child process over loopback HTTP through our ``remote_decode`` (the client's
tensor-to-bytes, the request, query parsing, the scheduler's hop to its worker thread, the response
body, and the client's parsing or image decoding). The two are timed alternately; "added" is the
median of the per-pair differences. The outputs are checked equal once, so both sides did the
same work.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import torch
from PIL import Image

from hf_remote_vae_toolkit import protocol
from hf_remote_vae_toolkit.client import new_session, remote_decode
from hf_remote_vae_toolkit.server.codecs import encode_response

from .common import paired_ms
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


def run_overhead(handler: Any, url: str, sizes: list[int], repeats: dict[int, int], log: Any) -> list[dict[str, Any]]:
    """Rows of ``{size, output, inproc_ms, http_ms, added_ms, ratio, same_output}`` for each size and output type."""
    rows = []
    session = new_session(pool_size=1)
    for size in sizes:
        latents = torch.randn(1, 4, size // 8, size // 8, generator=torch.Generator().manual_seed(size)).half()
        for out in OUTPUT_TYPES.values():
            if not out.client:
                continue

            def local(out: Any = out, latents: torch.Tensor = latents) -> Any:
                data = out.handler_data(latents)
                return encode_response(handler(data), out.accept, data["parameters"])

            def remote(out: Any = out, latents: torch.Tensor = latents) -> Any:
                return remote_decode(
                    url, latents, scaling_factor=SD_SCALING, session=session, retries=0, **out.client_kwargs
                )

            same = bool(np.array_equal(_as_array(local()), _as_array(remote())))
            t = paired_ms(local, remote, repeats[size], warmup=0)  # the equality check above was the warm-up
            row = {
                "size": size,
                "output": out.name,
                "inproc_ms": round(t["a_ms"], 2),
                "http_ms": round(t["b_ms"], 2),
                "added_ms": round(t["diff_ms"], 2),
                "ratio": round(t["b_ms"] / t["a_ms"], 3),
                "same_output": same,
                "repeats": repeats[size],
            }
            log(row)
            rows.append(row)
    session.close()
    return rows
