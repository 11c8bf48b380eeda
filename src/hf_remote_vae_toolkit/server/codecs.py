"""Request bodies -> the handler's ``data``, and handler results -> response bodies.

Requests are read exactly as the stock Inference Endpoints toolkit reads them, so a stock handler sees the
same ``data`` dict it would see there (``docs/compatibility.md`` lists where the server accepts more):

====================================  =====================================================================
request                               ``data``
====================================  =====================================================================
JSON object with ``inputs`` (or       the object as is; a JSON body without either key is a 400
``instances``)
``image/*``                           ``{"inputs": PIL image converted to RGB}``
``audio/*``                           ``{"inputs": bytes}``
``tensor/binary`` (+ shape, dtype)    ``{"inputs": torch.Tensor}`` (our extension)
``tensor/base64``                     ``{"inputs": torch.Tensor}`` plus the body's own ``parameters``
no ``Content-Type``                   a tensor when ``shape`` and ``dtype`` are in the query, else an image
====================================  =====================================================================

then, as the stock toolkit does, when the query string is not empty and ``data`` has no ``parameters``:
``data["parameters"] = {key: last value}``, with values that are ``str.isnumeric()`` turned into ``int`` and
exactly ``true``/``false`` into bools. Handlers with a parse step get the typed, multi-valued reading of the
query as well (``RequestInfo.query``).

Responses go by the negotiated ``Accept``. A stock handler's result is serialised as the stock toolkit does
(orjson with numpy support, PIL images as base64 PNG in JSON, ``image/*`` saved in the image's own mode with
Pillow's defaults); what our handlers return (``Output``, tensors) uses the fast encoders in ``media.py``.

Everything here is synchronous and CPU-bound; the app runs it in a thread.
"""

from __future__ import annotations

import base64
import binascii
import io
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import orjson
import torch
from PIL import Image, UnidentifiedImageError

from .. import media, protocol
from ..contract import Output
from ..errors import InvalidRequest, NotAcceptable, PayloadTooLarge, UnsupportedMediaType

__all__ = [
    "Decoded",
    "decode_request",
    "stock_parameters",
    "negotiate",
    "encode_response",
    "SUPPORTED_ACCEPT",
    "Encoded",
    "open_image_header",
    "LAZY_IMAGE_FORMATS",
]

Encoded = tuple[bytes, str, dict[str, str]]


# --------------------------------------------------------------------------- requests


@dataclass
class Decoded:
    """A request body as handlers see it: the stock ``data`` dict and where its parameters came from."""

    data: dict[str, Any]
    body_type: str | None
    body_parameters: bool


def stock_parameters(items: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """Query pairs -> ``parameters`` exactly as the stock toolkit builds them: the last value of a repeated
    key, ``str.isnumeric()`` values as ``int``, exactly ``"true"``/``"false"`` as bools, the rest strings."""
    params: dict[str, Any] = dict(items)
    for key, value in list(params.items()):
        if value.isnumeric():
            try:
                params[key] = int(value)
            except ValueError:  # "²" is numeric but no int; the stock toolkit answers 400 with this message
                raise InvalidRequest(f"invalid literal for int() with base 10: {value!r}") from None
        if value == "false":
            params[key] = False
        if value == "true":
            params[key] = True
    return params


def _parse_json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"body is not valid JSON: {exc}") from None


def _decode_json(body: bytes, query: dict[str, Any]) -> dict[str, Any]:
    payload = _parse_json(body)
    if not isinstance(payload, dict) or ("inputs" not in payload and "instances" not in payload):
        raise InvalidRequest(
            'the JSON body must be an object with an "inputs" key, e.g. {"inputs": ..., "parameters": {...}}'
        )
    return payload


def _tensor_params(query: dict[str, Any], where: str) -> tuple[Any, Any]:
    if "shape" not in query or "dtype" not in query:
        raise InvalidRequest(
            f"{where} needs `shape` and `dtype` query parameters, e.g. ?shape=1&shape=4&shape=64&shape=64&dtype=float16"
        )
    return query["shape"], query["dtype"]


def _decode_tensor_binary(body: bytes, query: dict[str, Any]) -> dict[str, Any]:
    shape, dtype = _tensor_params(query, "a tensor/binary body")
    return {"inputs": protocol.tensor_from_bytes(body, shape, dtype)}


def _decode_tensor_base64(body: bytes, query: dict[str, Any]) -> dict[str, Any]:
    payload = _parse_json(body)
    if not isinstance(payload, dict) or not isinstance(payload.get("inputs"), str):
        raise InvalidRequest('a tensor/base64 body must be JSON {"inputs": "<base64 of the raw tensor bytes>"}')
    own = payload.get("parameters")
    if own is not None and not isinstance(own, dict):
        raise InvalidRequest(f'"parameters" must be a JSON object, got {type(own).__name__}')
    shape, dtype = _tensor_params({**(own or {}), **query}, "a tensor/base64 body")
    try:
        raw = base64.b64decode(payload["inputs"], validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest("`inputs` is not valid base64") from None
    data: dict[str, Any] = {"inputs": protocol.tensor_from_bytes(raw, shape, dtype)}
    if own is not None:
        data["parameters"] = own
    return data


def _decode_image(body: bytes, query: dict[str, Any]) -> dict[str, Any]:
    return {"inputs": media.open_image(body)}


#: Image formats a handler with a parse step is given (``lazy_images``): what cameras, browsers and
#: diffusion tools write. Others (EPS and PostScript through Ghostscript, PDF, exotic formats) are a 415.
LAZY_IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF")


def open_image_header(body: bytes) -> Image.Image:
    """Image bytes -> a PIL image whose header is read and whose pixels are not decoded yet.

    For handlers with a parse step: the handler checks the size (``image.width``, ``image.height``) against
    its own limit before anything is decoded, so a small file of huge dimensions costs nothing. Formats
    outside ``LAZY_IMAGE_FORMATS`` are refused; decompression bombs (Pillow's limit) are a 413.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(body), formats=LAZY_IMAGE_FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise PayloadTooLarge(f"image is too large to decode: {exc}") from None
    except UnidentifiedImageError:
        raise UnsupportedMediaType(
            f"the body is not an image in a supported format ({', '.join(LAZY_IMAGE_FORMATS)})"
        ) from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise InvalidRequest(f"the image cannot be read: {exc}") from None
    if image.width <= 0 or image.height <= 0:
        raise InvalidRequest(f"the image has no pixels ({image.width}x{image.height})")
    return image


def _decode_image_lazy(body: bytes, query: dict[str, Any]) -> dict[str, Any]:
    return {"inputs": open_image_header(body)}


def _decode_bytes(body: bytes, query: dict[str, Any]) -> dict[str, Any]:
    return {"inputs": bytes(body)}


def _decode_untyped(
    body: bytes, query: dict[str, Any], image: Callable[[bytes, dict[str, Any]], dict[str, Any]] | None = None
) -> dict[str, Any]:
    # Encode clients (diffusers' remote_encode) send no Content-Type at all.
    if "shape" in query and "dtype" in query:
        return _decode_tensor_binary(body, query)
    try:
        return (image or _decode_image)(body, query)
    except (InvalidRequest, UnsupportedMediaType):
        raise UnsupportedMediaType(
            "no Content-Type and the body is not an image; send Content-Type: application/json, "
            "image/*, audio/*, tensor/binary (with shape and dtype query parameters) or tensor/base64"
        ) from None


DECODERS: dict[str, Callable[[bytes, dict[str, Any]], dict[str, Any]]] = {
    protocol.JSON: _decode_json,
    protocol.TENSOR_BINARY: _decode_tensor_binary,
    protocol.TENSOR_BASE64: _decode_tensor_base64,
    "application/octet-stream": _decode_untyped,
}

_BODY_PARAMETERS = (protocol.JSON, protocol.TENSOR_BASE64)


def decode_request(
    content_type: str | None,
    body: bytes,
    query_items: list[tuple[str, str]],
    query: dict[str, Any],
    *,
    lazy_images: bool = False,
) -> Decoded:
    """Build the handler's ``data`` from a request body (the table above). ``query`` is the typed reading
    of ``query_items`` (tensor bodies take ``shape`` and ``dtype`` from it). ``lazy_images`` (handlers with a
    parse step): an image body is given as opened but not decoded (``open_image_header``), in its own mode."""
    kind = protocol.media_type(content_type)
    image = _decode_image_lazy if lazy_images else _decode_image
    if kind is None or kind == "application/octet-stream":
        data = _decode_untyped(body, query, image)
    elif kind in DECODERS:
        data = DECODERS[kind](body, query)
    elif kind.startswith("image/"):
        data = image(body, query)
    elif kind.startswith("audio/"):
        data = _decode_bytes(body, query)
    elif "shape" in query and "dtype" in query:
        data = _decode_tensor_binary(body, query)
    else:
        raise UnsupportedMediaType(
            f"unsupported Content-Type {kind!r}; "
            "expected application/json, image/*, audio/*, tensor/binary or tensor/base64"
        )
    own = kind in _BODY_PARAMETERS and "parameters" in data
    if query_items and "parameters" not in data:
        data["parameters"] = stock_parameters(query_items)
    return Decoded(data=data, body_type=kind, body_parameters=own)


# --------------------------------------------------------------------------- content negotiation

#: Image types a PIL result can be saved as, and Pillow's format name for each.
IMAGE_FORMATS = {
    protocol.IMAGE_PNG: "PNG",
    protocol.IMAGE_JPEG: "JPEG",
    protocol.IMAGE_WEBP: "WEBP",
    "image/tiff": "TIFF",
    "image/bmp": "BMP",
    "image/gif": "GIF",
}

#: Accept entries we can answer, in the form handlers see them (aliases map onto these).
SUPPORTED_ACCEPT = (
    protocol.JSON,
    *IMAGE_FORMATS,
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
    try:
        import numpy as np
    except ImportError:  # pragma: no cover
        return None
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value))
    return None


def _png_base64(image: Image.Image) -> str:
    with io.BytesIO() as out:
        image.save(out, format="PNG")
        return base64.b64encode(out.getvalue()).decode("utf-8")


def _stock_default(value: Any) -> Any:
    if isinstance(value, Image.Image):
        return _png_base64(value)
    raise TypeError


def _extended_default(value: Any) -> Any:
    # our handlers may also answer JSON with tensors (as nested lists) and bytes (as base64)
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().tolist()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    return _stock_default(value)


def encode_json(value: Any, *, stock: bool = True) -> bytes:
    """JSON the way the stock toolkit writes it (orjson: NaN -> null, datetimes as ISO strings, numpy
    scalars and arrays natively, PIL images as base64 PNG); ``stock=False`` also takes tensors and bytes.
    Raises ``TypeError`` for anything else, as the stock toolkit does."""
    return orjson.dumps(
        value, option=orjson.OPT_SERIALIZE_NUMPY, default=_stock_default if stock else _extended_default
    )


def _encode_image(value: Any, kind: str, options: dict[str, Any], stock: bool) -> bytes:
    if not isinstance(value, Image.Image):
        # the stock toolkit's words, so a stock handler's client sees the same 400
        raise ValueError(f"Can only serialize PIL.Image.Image, got {type(value)}")
    if not stock and kind in media.ENCODERS:
        return media.ENCODERS[kind](value, **options)
    with io.BytesIO() as out:  # Pillow's defaults, in the image's own mode (RGBA as JPEG fails, as in stock)
        value.save(out, format=IMAGE_FORMATS[kind], **options)
        return out.getvalue()


def _encode_tensor(value: Any, kind: str) -> Encoded:
    tensor = _as_tensor(value)
    if tensor is None:
        raise NotAcceptable(f"the handler returned {type(value).__name__}, which cannot be sent as {kind}")
    headers = protocol.tensor_headers(tensor)
    raw = protocol.tensor_to_bytes(tensor)
    if kind == protocol.TENSOR_BINARY:
        return raw, kind, headers
    payload = {
        "inputs": base64.b64encode(raw).decode("ascii"),
        "parameters": {"shape": list(tensor.shape), "dtype": headers[protocol.HEADER_DTYPE]},
    }
    return orjson.dumps(payload), kind, {}


_BYTES_KINDS = (protocol.TEXT_PLAIN, protocol.VIDEO_MP4, "application/octet-stream")


def _encode_bytes(value: Any, kind: str) -> bytes:
    if isinstance(value, str):
        return value.encode("utf-8")
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise NotAcceptable(f"the handler returned {type(value).__name__}, which cannot be sent as {kind}")
    return bytes(value)


def _natural_kind(value: Any) -> str:
    # "*/*" or no Accept: JSON, as on the stock toolkit, except for what JSON cannot carry there: bytes and
    # torch tensors go out as themselves (the stock toolkit answers those with a 400)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "application/octet-stream"
    if isinstance(value, torch.Tensor):
        return protocol.TENSOR_BINARY
    return protocol.JSON


def encode_response(result: Any, accept: str | None, *, stock: bool = True) -> Encoded:
    """A handler result -> (body, content type, extra headers) for the negotiated ``accept``.

    ``stock``: serialise as the stock toolkit does (a handler without a parse step). Raises what the
    serialisers raise (``TypeError``, ``ValueError``, ``OSError`` for an image mode the format cannot hold);
    the app turns those into the stock toolkit's 400 for stock handlers.
    """
    headers: dict[str, str] = {}
    options: dict[str, Any] = {}
    kind = accept
    if isinstance(result, Output):
        headers.update(result.headers)
        value = result.finish(result.value) if result.finish is not None else result.value
        if result.media_type is not None and isinstance(value, (bytes, bytearray, memoryview)):
            # pre-encoded bytes are sent as what they are; a client that asked for bytes in general
            # (text/plain: how the diffusers client asks for MP4) gets its own type echoed
            if accept not in (None, result.media_type, *_BYTES_KINDS):
                raise NotAcceptable(f"the handler produced {result.media_type}, which cannot be sent as {accept}")
            label = accept if accept in (protocol.TEXT_PLAIN, "application/octet-stream") else result.media_type
            return bytes(value), label, headers
        if kind is None and result.media_type is not None:
            kind = result.media_type  # "encode it as this" (here, off the GPU worker's thread)
        options = dict(result.encode_options)
        result = value
    kind = kind or _natural_kind(result)
    if kind == protocol.JSON:
        return encode_json(result, stock=stock), protocol.JSON, headers
    if kind in IMAGE_FORMATS:
        return _encode_image(result, kind, options, stock), kind, headers
    if kind in (protocol.TENSOR_BINARY, protocol.TENSOR_BASE64):
        body, content_type, extra = _encode_tensor(result, kind)
        headers.update(extra)
        return body, content_type, headers
    if kind in _BYTES_KINDS:
        return _encode_bytes(result, kind), kind, headers
    raise NotAcceptable(f"the handler asked for {kind!r}, which this server cannot encode")
