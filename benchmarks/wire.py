"""Section 3: bytes on the wire per output type, against the latent's own size.

Plain ``requests.post`` with the protocol's query and headers, so the byte counts are the bodies
themselves: the request body is the latent's raw bytes, the response body what the output type
costs. Random-weight VAEs decode to structured noise, which compresses worse than a photograph: the
JPEG/PNG/WebP sizes here are upper bounds for real images; the tensor sizes are exact for any image.
"""

from __future__ import annotations

from typing import Any

import requests
import torch

from hf_remote_vae_toolkit import protocol

from .outputs import OUTPUT_TYPES, SD_SCALING

__all__ = ["run_wire"]


def _post(url: str, latents: torch.Tensor, params: dict[str, Any], accept: str) -> requests.Response:
    query = {**params, "scaling_factor": SD_SCALING, "shape": list(latents.shape)}
    query["dtype"] = protocol.dtype_name(latents.dtype)
    headers = {"Content-Type": protocol.TENSOR_BINARY, "Accept": accept}
    response = requests.post(url, params=query, data=protocol.tensor_to_bytes(latents), headers=headers, timeout=600)
    response.raise_for_status()
    return response


def run_wire(url: str, sizes: list[int], log: Any) -> list[dict[str, Any]]:
    """Rows of ``{size, output, latent_bytes, response_bytes, ratio, model_dtype}``; latents sent as float16."""
    rows = []
    for size in sizes:
        latents = torch.randn(1, 4, size // 8, size // 8, generator=torch.Generator().manual_seed(size)).half()
        sent = len(protocol.tensor_to_bytes(latents))
        for out in OUTPUT_TYPES.values():
            response = _post(url, latents, out.params, out.accept)
            row = {
                "size": size,
                "output": out.name,
                "latent_bytes": sent,
                "response_bytes": len(response.content),
                "ratio": round(len(response.content) / sent, 2),
                "response_dtype": response.headers.get(protocol.HEADER_DTYPE, "-"),
            }
            log(row)
            rows.append(row)
    return rows
