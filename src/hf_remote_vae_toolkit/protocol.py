"""The remote-VAE wire protocol, in one module that both the server and the client import.

Everything that must agree on both ends of the wire lives here: media types, header names,
the dtype table, how query parameters are written and read back, and how a tensor travels as
raw bytes (C-contiguous, little-endian, no header; ``shape`` and ``dtype`` beside it).
See ``docs/protocol.md`` for the specification this module implements.
Only little-endian hosts are supported (every platform torch ships for).

torch is imported on first use, not at import time: the light client install (no torch) imports
this module for its media types, header names and query helpers.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .errors import InvalidRequest

if TYPE_CHECKING:
    import torch

__all__ = [
    "JSON",
    "TENSOR_BINARY",
    "TENSOR_BASE64",
    "IMAGE_PNG",
    "IMAGE_JPEG",
    "IMAGE_WEBP",
    "TEXT_PLAIN",
    "VIDEO_MP4",
    "ANY",
    "HEADER_SHAPE",
    "HEADER_DTYPE",
    "HEADER_REQUEST_ID",
    "HEADER_TILED",
    "HEADER_FRAMES",
    "DTYPES",
    "DTYPE_NAMES",
    "MAX_RANK",
    "media_type",
    "parse_accept",
    "coerce_value",
    "parse_query",
    "encode_query",
    "dtype_from_name",
    "dtype_name",
    "parse_shape",
    "tensor_nbytes",
    "tensor_from_bytes",
    "tensor_to_bytes",
    "tensor_headers",
    "tensor_from_response",
    "error_body",
]

JSON = "application/json"
TENSOR_BINARY = "tensor/binary"
TENSOR_BASE64 = "tensor/base64"
IMAGE_PNG = "image/png"
IMAGE_JPEG = "image/jpeg"
IMAGE_WEBP = "image/webp"
TEXT_PLAIN = "text/plain"  # bytes passed through: the diffusers client asks for MP4 this way
VIDEO_MP4 = "video/mp4"
ANY = "*/*"

HEADER_SHAPE = "shape"
HEADER_DTYPE = "dtype"
HEADER_REQUEST_ID = "X-Request-Id"
HEADER_TILED = "X-Tiled"
HEADER_FRAMES = "X-Frames"  # a streamed video: how many frames the body will carry

#: The wire dtype names. The diffusers client knows exactly these four.
DTYPE_NAMES = ("float16", "float32", "bfloat16", "uint8")

DTYPES: dict[str, torch.dtype]  # wire name -> torch dtype; built on first access (module __getattr__)
_NAMES: dict[torch.dtype, str]


def _dtype_tables() -> tuple[dict[str, torch.dtype], dict[torch.dtype, str]]:
    # Built on first use, so that importing this module does not import torch.
    if "DTYPES" not in globals():
        import torch

        dtypes = {n: getattr(torch, n) for n in DTYPE_NAMES}
        globals().update(DTYPES=dtypes, _NAMES={v: k for k, v in dtypes.items()})
    return globals()["DTYPES"], globals()["_NAMES"]


def __getattr__(name: str) -> Any:
    if name in ("DTYPES", "_NAMES"):
        return _dtype_tables()[0 if name == "DTYPES" else 1]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


#: Largest tensor rank accepted on the wire (video latents are 5-D).
MAX_RANK = 6

_INT_RE = re.compile(r"^[+-]?\d+$")
_FLOAT_RE = re.compile(r"^[+-]?(\d+\.\d*|\.\d+|\d+)([eE][+-]?\d+)?$|^[+-]?\d+[eE][+-]?\d+$")


# --------------------------------------------------------------------------- media types


def media_type(value: str | None) -> str | None:
    """``"Application/JSON; charset=utf-8"`` -> ``"application/json"``; empty -> None."""
    if not value:
        return None
    base = value.split(";", 1)[0].strip().lower()
    return base or None


def parse_accept(value: str | None) -> list[str]:
    """The media types of an ``Accept`` header, in the order given (parameters dropped).

    The protocol's rule is "first supported entry wins", so quality values are not used to
    reorder; an entry with ``q=0`` is dropped because it explicitly refuses that type.
    """
    if not value:
        return []
    out: list[str] = []
    for part in value.split(","):
        pieces = [p.strip() for p in part.split(";")]
        base = pieces[0].lower()
        if not base:
            continue
        refused = any(p.replace(" ", "").lower() in ("q=0", "q=0.0", "q=0.00", "q=0.000") for p in pieces[1:])
        if not refused:
            out.append(base)
    return out


# --------------------------------------------------------------------------- query strings


def coerce_value(raw: str) -> Any:
    """One query value: ``true``/``false`` (any case) -> bool, integers -> int, decimals -> float."""
    lowered = raw.strip().lower()
    if lowered == "true":
        return True
    if lowered == "false":
        return False
    text = raw.strip()
    if _INT_RE.match(text):
        return int(text)
    if _FLOAT_RE.match(text):
        return float(text)
    return raw


def parse_query(items: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """Query pairs (in order) -> parameters: a repeated key becomes a list, values coerced.

    ``shape`` is always a list, even with one element, because it names a tensor's dimensions.
    """
    grouped: dict[str, list[Any]] = {}
    for key, value in items:
        grouped.setdefault(key, []).append(coerce_value(value))
    params: dict[str, Any] = {}
    for key, values in grouped.items():
        if key == HEADER_SHAPE or len(values) > 1:
            params[key] = values
        else:
            params[key] = values[0]
    return params


def encode_query(params: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Parameters -> query pairs the way Python ``requests`` writes them (lists repeat the key,
    bools as ``True``/``False``, floats with ``repr``, ``None`` dropped)."""
    pairs: list[tuple[str, str]] = []
    for key, value in params.items():
        values = value if isinstance(value, (list, tuple)) else [value]
        for v in values:
            if v is None:
                continue
            pairs.append((key, repr(v) if isinstance(v, float) else str(v)))
    return pairs


# --------------------------------------------------------------------------- tensors


def dtype_from_name(name: Any) -> torch.dtype:
    """Wire dtype name -> torch dtype; a 400 naming the valid names otherwise."""
    if isinstance(name, str) and name.lower() in DTYPE_NAMES:
        return _dtype_tables()[0][name.lower()]
    raise InvalidRequest(f"unsupported dtype {name!r}; expected one of {sorted(DTYPE_NAMES)}")


def dtype_name(dtype: torch.dtype) -> str:
    """torch dtype -> wire name (only the four the protocol knows)."""
    try:
        return _dtype_tables()[1][dtype]
    except KeyError:
        raise ValueError(f"dtype {dtype} cannot travel on the wire; use one of {sorted(DTYPE_NAMES)}") from None


def parse_shape(value: Any) -> tuple[int, ...]:
    """The ``shape`` parameter (list of ints, or a JSON list string) -> a validated tuple.

    Every dimension must be a positive integer and the rank at most ``MAX_RANK``; nothing is
    allocated here, so an absurd shape costs nothing.
    """
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise InvalidRequest(f"shape must be a list of positive integers, got {value!r}") from None
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, (list, tuple)) or not value:
        raise InvalidRequest(f"shape must be a non-empty list of positive integers, got {value!r}")
    if len(value) > MAX_RANK:
        raise InvalidRequest(f"shape has rank {len(value)}; at most {MAX_RANK} dimensions are accepted")
    dims: list[int] = []
    for d in value:
        if isinstance(d, bool) or not isinstance(d, int) or d <= 0:
            raise InvalidRequest(f"shape must be a list of positive integers, got {list(value)!r}")
        dims.append(d)
    return tuple(dims)


def tensor_nbytes(shape: Sequence[int], dtype: torch.dtype) -> int:
    """Bytes of a tensor of that shape and dtype (Python integers: no overflow, no allocation)."""
    return math.prod(shape) * dtype.itemsize


def tensor_from_bytes(body: bytes | bytearray | memoryview, shape: Any, dtype: Any) -> torch.Tensor:
    """Raw little-endian bytes -> a CPU tensor that owns its memory.

    ``shape``/``dtype`` are the wire parameters; the body length must equal
    ``prod(shape) * itemsize`` and is checked before anything is allocated.
    """
    import torch

    dims = parse_shape(shape)
    torch_dtype = dtype_from_name(dtype)
    expected = tensor_nbytes(dims, torch_dtype)
    if len(body) != expected:
        raise InvalidRequest(
            f"body is {len(body)} bytes but shape {list(dims)} of {dtype_name(torch_dtype)} needs {expected} bytes"
        )
    # a writable buffer the tensor owns: a bytearray is taken as is (the caller hands it over: the server's
    # request body), anything else is copied once
    buf = body if isinstance(body, bytearray) else bytearray(body)
    flat = torch.frombuffer(buf, dtype=torch_dtype) if expected else torch.empty(0, dtype=torch_dtype)
    return flat.reshape(dims)


def tensor_to_bytes(tensor: torch.Tensor) -> bytes:
    """A tensor -> its raw C-contiguous little-endian bytes (bf16 as raw 2-byte words)."""
    import torch

    t = tensor.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    t = t.contiguous()
    dtype_name(t.dtype)  # refuse dtypes the other side cannot read
    if t.dtype == torch.bfloat16:
        t = t.view(torch.int16)
    return t.numpy().tobytes()


def tensor_headers(tensor: torch.Tensor) -> dict[str, str]:
    """The ``shape`` (JSON list) and ``dtype`` headers that travel beside a tensor body."""
    return {
        HEADER_SHAPE: json.dumps(list(tensor.shape), separators=(",", ":")),
        HEADER_DTYPE: dtype_name(tensor.dtype),
    }


def tensor_from_response(body: bytes, headers: Mapping[str, str]) -> torch.Tensor:
    """A ``tensor/binary`` response (body + ``shape``/``dtype`` headers) -> tensor."""
    try:
        shape = json.loads(headers[HEADER_SHAPE])
        dtype = headers[HEADER_DTYPE]
    except (KeyError, json.JSONDecodeError) as exc:
        raise ValueError(f"tensor response without valid shape/dtype headers: {exc}") from None
    return tensor_from_bytes(body, shape, dtype)


def error_body(message: str, **extra: Any) -> dict[str, Any]:
    """The JSON body of every error response."""
    return {"error": message, **extra}
