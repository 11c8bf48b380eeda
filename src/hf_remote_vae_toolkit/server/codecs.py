"""Request bodies -> handler ``data``, and handler results -> response bodies.

Two registries keyed by media type, so adding a kind is one entry, not another ``elif``:

- ``DECODERS``: ``Content-Type`` -> function(body, query) -> ``data`` dict (TOOLKIT_CONTRACT.md table).
- ``ENCODERS``: negotiated ``Accept`` -> function(result, parameters) -> (body, content type, headers).

Everything here is synchronous and CPU-bound (image decoding, PNG encoding); the app runs it in a
thread so the event loop keeps answering ``/health``.
"""

from __future__ import annotations

import base64
import io
import json
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from .. import media, protocol
from ..errors import InvalidRequest, NotAcceptable, PayloadTooLarge, UnsupportedMediaType
from .output import Output

__all__ = ["decode_request", "negotiate", "encode_response", "SUPPORTED_ACCEPT", "Encoded"]

Query = dict[str, Any]
Encoded = tuple[bytes, str, dict[str, str]]


# --------------------------------------------------------------------------- requests


def _parse_json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidRequest(f"body is not valid JSON: {exc}") from None


def _decode_json(body: bytes, query: Query) -> dict[str, Any]:
    payload = _parse_json(body)
    if not isinstance(payload, dict) or "inputs" not in payload:
        raise InvalidRequest('JSON body must be an object with an "inputs" key, e.g. {"inputs": ..., "parameters": {}}')
    if "parameters" not in payload and query:
        payload["parameters"] = dict(query)
    return payload


def _tensor_params(query: Query, where: str) -> tuple[Any, Any]:
    if "shape" not in query or "dtype" not in query:
        raise InvalidRequest(f"{where} needs `shape` (repeated int) and `dtype` query parameters")
    return query["shape"], query["dtype"]


def _decode_tensor_binary(body: bytes, query: Query) -> dict[str, Any]:
    shape, dtype = _tensor_params(query, "a tensor/binary body")
    return {"inputs": protocol.tensor_from_bytes(body, shape, dtype), "parameters": dict(query)}


def _decode_tensor_base64(body: bytes, query: Query) -> dict[str, Any]:
    payload = _parse_json(body)
    if not isinstance(payload, dict) or not isinstance(payload.get("inputs"), str):
        raise InvalidRequest('a tensor/base64 body must be JSON {"inputs": "<base64 of the raw tensor bytes>"}')
    params = {**dict(payload.get("parameters") or {}), **query}
    shape, dtype = _tensor_params(params, "a tensor/base64 body")
    try:
        raw = base64.b64decode(payload["inputs"], validate=True)
    except ValueError:
        raise InvalidRequest("`inputs` is not valid base64") from None
    return {"inputs": protocol.tensor_from_bytes(raw, shape, dtype), "parameters": params}


def open_image(body: bytes) -> Image.Image:
    """Image bytes (any format Pillow reads) -> RGB image; decompression bombs are refused."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(body))
            image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise PayloadTooLarge(f"image is too large to decode: {exc}") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise InvalidRequest(f"body is not an image Pillow can read: {exc}") from None
    return image.convert("RGB") if image.mode != "RGB" else image


def _decode_image(body: bytes, query: Query) -> dict[str, Any]:
    return {"inputs": open_image(body), "parameters": dict(query)}


def _decode_bytes(body: bytes, query: Query) -> dict[str, Any]:
    return {"inputs": body, "parameters": dict(query)}


def _decode_untyped(body: bytes, query: Query) -> dict[str, Any]:
    # Encode clients (diffusers' remote_encode) send no Content-Type at all.
    if "shape" in query and "dtype" in query:
        return _decode_tensor_binary(body, query)
    try:
        return _decode_image(body, query)
    except InvalidRequest:
        raise UnsupportedMediaType(
            "no Content-Type and the body is not an image; send Content-Type: application/json, "
            "image/*, audio/*, tensor/binary (with shape and dtype query parameters) or tensor/base64"
        ) from None


DECODERS: dict[str, Callable[[bytes, Query], dict[str, Any]]] = {
    protocol.JSON: _decode_json,
    protocol.TENSOR_BINARY: _decode_tensor_binary,
    protocol.TENSOR_BASE64: _decode_tensor_base64,
    "application/octet-stream": _decode_untyped,
}


def decode_request(content_type: str | None, body: bytes, query: Query) -> dict[str, Any]:
    """Build the handler's ``data`` from a request body (see the contract's table)."""
    kind = protocol.media_type(content_type)
    if kind is None:
        return _decode_untyped(body, query)
    if kind in DECODERS:
        return DECODERS[kind](body, query)
    if kind.startswith("image/"):
        return _decode_image(body, query)
    if kind.startswith("audio/"):
        return _decode_bytes(body, query)
    if "shape" in query and "dtype" in query:
        return _decode_tensor_binary(body, query)
    raise UnsupportedMediaType(
        f"unsupported Content-Type {kind!r}; "
        "expected application/json, image/*, audio/*, tensor/binary or tensor/base64"
    )


# --------------------------------------------------------------------------- content negotiation

#: Accept entries we can answer, in the form handlers see them (aliases map onto these).
SUPPORTED_ACCEPT = (
    protocol.JSON,
    protocol.IMAGE_PNG,
    protocol.IMAGE_JPEG,
    protocol.IMAGE_WEBP,
    protocol.TENSOR_BINARY,
    protocol.TENSOR_BASE64,
    protocol.TEXT_PLAIN,
    protocol.VIDEO_MP4,
    "application/octet-stream",
)
_ALIASES = {"image/jpg": protocol.IMAGE_JPEG, "image/*": protocol.IMAGE_PNG, "text/*": protocol.TEXT_PLAIN}
_ANY = (protocol.ANY, "application/*")


def negotiate(accept_header: str | None) -> str | None:
    """The first supported entry of ``Accept``; ``None`` means "anything" (the handler's natural
    output). Raises ``NotAcceptable`` (406) when nothing listed can be produced."""
    entries = protocol.parse_accept(accept_header)
    if not entries:
        return None
    for entry in entries:
        entry = _ALIASES.get(entry, entry)
        if entry in SUPPORTED_ACCEPT:
            return entry
        if entry in _ANY:
            return None
    raise NotAcceptable(f"cannot answer with any of {entries}; supported: {list(SUPPORTED_ACCEPT)} or */*")


# --------------------------------------------------------------------------- responses


def _as_tensor(value: Any) -> torch.Tensor | None:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value))
    return None


def to_jsonable(value: Any) -> Any:
    """Handler results -> JSON-able values (tensors and arrays as lists, images as base64 PNG)."""
    if isinstance(value, (torch.Tensor, np.ndarray)):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Image.Image):
        return base64.b64encode(media.encode_png(value)).decode("ascii")
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    return value


def _encode_json(value: Any, params: Query) -> Encoded:
    body = json.dumps(to_jsonable(value), separators=(",", ":")).encode("utf-8")
    return body, protocol.JSON, {}


def _first_image(value: Any) -> Image.Image | None:
    if isinstance(value, Image.Image):
        return value
    if isinstance(value, (list, tuple)) and value and isinstance(value[0], Image.Image):
        return value[0]
    return None


def _image_encoder(kind: str, fn: Callable[..., bytes]) -> Callable[[Any, Query], Encoded]:
    def encode(value: Any, params: Query) -> Encoded:
        image = _first_image(value)
        if image is None:
            raise NotAcceptable(f"the handler returned {type(value).__name__}, which cannot be sent as {kind}")
        return fn(image, params), kind, {}

    return encode


def _encode_tensor_binary(value: Any, params: Query) -> Encoded:
    tensor = _as_tensor(value)
    if tensor is None:
        raise NotAcceptable(f"the handler returned {type(value).__name__}, which cannot be sent as tensor/binary")
    return protocol.tensor_to_bytes(tensor), protocol.TENSOR_BINARY, protocol.tensor_headers(tensor)


def _encode_tensor_base64(value: Any, params: Query) -> Encoded:
    tensor = _as_tensor(value)
    if tensor is None:
        raise NotAcceptable(f"the handler returned {type(value).__name__}, which cannot be sent as tensor/base64")
    headers = protocol.tensor_headers(tensor)
    payload = {
        "inputs": base64.b64encode(protocol.tensor_to_bytes(tensor)).decode("ascii"),
        "parameters": {"shape": list(tensor.shape), "dtype": headers[protocol.HEADER_DTYPE]},
    }
    return json.dumps(payload).encode("utf-8"), protocol.TENSOR_BASE64, {}


def _bytes_encoder(kind: str) -> Callable[[Any, Query], Encoded]:
    def encode(value: Any, params: Query) -> Encoded:
        if isinstance(value, str):
            value = value.encode("utf-8")
        if not isinstance(value, (bytes, bytearray, memoryview)):
            raise NotAcceptable(f"the handler returned {type(value).__name__}, which cannot be sent as {kind}")
        return bytes(value), kind, {}

    return encode


ENCODERS: dict[str, Callable[[Any, Query], Encoded]] = {
    protocol.JSON: _encode_json,
    protocol.IMAGE_PNG: _image_encoder(protocol.IMAGE_PNG, lambda im, p: media.encode_png(im)),
    protocol.IMAGE_JPEG: _image_encoder(
        protocol.IMAGE_JPEG, lambda im, p: media.encode_jpeg(im, quality=int(p.get("jpeg_quality", 75)))
    ),
    protocol.IMAGE_WEBP: _image_encoder(protocol.IMAGE_WEBP, lambda im, p: media.encode_webp(im)),
    protocol.TENSOR_BINARY: _encode_tensor_binary,
    protocol.TENSOR_BASE64: _encode_tensor_base64,
    protocol.TEXT_PLAIN: _bytes_encoder(protocol.TEXT_PLAIN),
    protocol.VIDEO_MP4: _bytes_encoder(protocol.VIDEO_MP4),
    "application/octet-stream": _bytes_encoder("application/octet-stream"),
}


def _natural_kind(value: Any) -> str:
    # "*/*" or no Accept: JSON, unless the result is bytes or a tensor (TOOLKIT_CONTRACT.md).
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "application/octet-stream"
    if _as_tensor(value) is not None:
        return protocol.TENSOR_BINARY
    return protocol.JSON


def encode_response(result: Any, accept: str | None, params: Query) -> Encoded:
    """A handler result -> (body, content type, extra headers) for the negotiated ``accept``."""
    headers: dict[str, str] = {}
    kind = accept
    if isinstance(result, Output):
        headers.update(result.headers)
        if result.finish is not None:
            result = Output(result.finish(result.value), result.headers, result.media_type)
        if result.media_type is not None and isinstance(result.value, (bytes, bytearray, memoryview)):
            # Pre-encoded bytes: the Content-Type echoes what the client asked for when it named
            # something (the diffusers client asks for MP4 as text/plain), else the real type.
            return bytes(result.value), accept or result.media_type, headers
        if kind is None and result.media_type is not None:
            kind = result.media_type  # "encode it as this" (here, off the GPU worker's thread)
        result = result.value
    kind = kind or _natural_kind(result)
    if kind not in ENCODERS:
        raise NotAcceptable(f"the handler asked for {kind!r}, which this server cannot encode")
    body, content_type, extra = ENCODERS[kind](result, params)
    headers.update(extra)
    return body, content_type, headers
