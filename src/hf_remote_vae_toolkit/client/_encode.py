"""``remote_encode``: diffusers' function, same arguments and result, with contiguous bytes that stay alive."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any

import numpy as np
import requests
from PIL import Image

from ._arrays import array_bytes, array_from_response, default_kind, is_array, kind_of, wire_dtype
from ._http import RetriesArg, TimeoutArg, TokenArg, post

if TYPE_CHECKING:
    import torch

__all__ = ["remote_encode", "prepare_encode"]


def prepare_encode(
    image: torch.Tensor | np.ndarray | Image.Image,
    scaling_factor: float | None = None,
    shift_factor: float | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The request the reference client sends: no ``Content-Type`` (the server tells a tensor body
    by ``shape``/``dtype`` in the query), a PNG for a PIL image. ``extra``: more query parameters."""
    params: dict[str, Any] = {k: v for k, v in (extra or {}).items() if v is not None}
    if scaling_factor is not None:
        params["scaling_factor"] = scaling_factor
    if shift_factor is not None:
        params["shift_factor"] = shift_factor
    if isinstance(image, Image.Image):
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        data = buffer.getvalue()
    elif is_array(image):
        # array_bytes returns an owned copy of the C-contiguous data; the reference reads the
        # buffer of a temporary ``.contiguous()`` copy that may already be freed.
        data = array_bytes(image)
        params["shape"] = list(image.shape)
        params["dtype"] = wire_dtype(image)
    else:
        raise TypeError(
            f"image must be a PIL.Image.Image, a torch.Tensor or a numpy.ndarray, got {type(image).__name__}"
        )
    return {"data": data, "params": params, "headers": {}}


def remote_encode(
    endpoint: str,
    image: torch.Tensor | np.ndarray | Image.Image,
    scaling_factor: float | None = None,
    shift_factor: float | None = None,
    *,
    sample: bool = False,
    seed: int | None = None,
    value_range: str | None = None,
    timeout: TimeoutArg = None,
    retries: RetriesArg = 3,
    token: TokenArg = None,
    session: requests.Session | None = None,
) -> Any:
    """Encode an image on a remote VAE; a drop-in for ``diffusers.utils.remote_utils.remote_encode``.

    ``image``: a ``PIL.Image`` (any mode; sent as PNG) or a tensor ``[B, 3, H, W]`` with values in
    ``[0, 1]`` or ``[-1, 1]`` (float16/bfloat16/float32, or uint8). Returns the latents
    ``[B, C, H/8, W/8]`` (always unpacked, also for Flux) in the server's dtype, with
    ``z = (z - shift_factor) * scaling_factor`` applied for the factors given. A numpy ``image``
    array gives numpy latents; a PIL image gives a torch tensor, or a numpy array when torch is not
    installed (the light client install).

    Keyword-only extras (the reference client has none of them): ``sample=True`` draws from the
    latent distribution instead of taking its mode (``seed`` makes the draw reproducible);
    ``value_range="-1,1"`` or ``"0,1"`` states a float tensor's range instead of letting the
    server infer it from the presence of a negative value. ``timeout``, ``retries``, ``token`` and
    ``session`` behave as in ``remote_decode``; errors are ``ServiceError`` subclasses.
    """
    if value_range is not None and value_range not in ("-1,1", "0,1"):
        raise ValueError(f"value_range must be '-1,1' or '0,1', got {value_range!r}")
    extra = {"sample": True if sample else None, "seed": seed if sample else None, "value_range": value_range}
    request = prepare_encode(image, scaling_factor, shift_factor, extra)
    response = post(endpoint, **request, timeout=timeout, retries=retries, token=token, session=session)
    kind = kind_of(image) if is_array(image) else default_kind()
    return array_from_response(response.content, response.headers, kind)
