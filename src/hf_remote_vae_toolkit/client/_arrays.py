"""Latents and results as torch tensors or numpy arrays, without importing torch unless it is used.

The light client install has no torch: callers pass numpy arrays and get numpy arrays (or PIL
images, or MP4 bytes) back. With torch installed, torch tensors in give torch tensors out, exactly as
before. numpy has no bfloat16: a ``bfloat16`` answer becomes ``float32`` numpy (exact: bfloat16 is
the top half of a float32).
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np

from ..protocol import DTYPE_NAMES, HEADER_DTYPE, HEADER_SHAPE, parse_shape

__all__ = [
    "Kind",
    "is_torch",
    "is_array",
    "kind_of",
    "default_kind",
    "wire_dtype",
    "array_bytes",
    "array_from_response",
]

Kind = Literal["torch", "numpy"]

_NUMPY_DTYPES = {"float16": np.float16, "float32": np.float32, "uint8": np.uint8}
_ITEMSIZE = {"float16": 2, "float32": 4, "bfloat16": 2, "uint8": 1}


def is_torch(value: Any) -> bool:
    """A torch tensor (checked without importing torch: if torch is not imported, it is not one)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.Tensor)


def is_array(value: Any) -> bool:
    return is_torch(value) or isinstance(value, np.ndarray)


def kind_of(value: Any) -> Kind:
    return "torch" if is_torch(value) else "numpy"


def default_kind() -> Kind:
    """For results with no input array to follow (an encode of a PIL image): torch when installed."""
    try:
        import torch  # noqa: F401
    except ImportError:
        return "numpy"
    return "torch"


def wire_dtype(value: Any) -> str:
    """The protocol's dtype name of a tensor/array; ``ValueError`` naming the accepted ones otherwise."""
    if is_torch(value):
        from ..protocol import dtype_name

        return dtype_name(value.dtype)
    name = np.dtype(value.dtype).name
    if name not in _NUMPY_DTYPES:
        raise ValueError(
            f"dtype {name} cannot travel on the wire; use one of {sorted(_NUMPY_DTYPES)} "
            "(numpy arrays; torch tensors may also be bfloat16)"
        )
    return name


def array_bytes(value: Any) -> bytes:
    """C-contiguous little-endian bytes of a tensor or array (whatever its memory layout)."""
    if is_torch(value):
        from ..protocol import tensor_to_bytes

        return tensor_to_bytes(value)
    wire_dtype(value)
    return np.ascontiguousarray(value, dtype=np.dtype(value.dtype).newbyteorder("<")).tobytes()


def array_from_response(body: bytes, headers: Mapping[str, str], kind: Kind) -> Any:
    """A ``tensor/binary`` answer (body + ``shape``/``dtype`` headers) -> torch tensor or numpy array."""
    if kind == "torch":
        from ..protocol import tensor_from_response

        return tensor_from_response(body, headers)
    try:
        shape = parse_shape(json.loads(headers[HEADER_SHAPE]))
        dtype = str(headers[HEADER_DTYPE]).lower()
    except (KeyError, json.JSONDecodeError, ValueError) as exc:
        raise ValueError(f"tensor response without valid shape/dtype headers: {exc}") from None
    if dtype not in DTYPE_NAMES:
        raise ValueError(f"tensor response of unknown dtype {dtype!r}")
    expected = math.prod(shape) * _ITEMSIZE[dtype]
    if len(body) != expected:
        raise ValueError(f"tensor response is {len(body)} bytes but shape {list(shape)} of {dtype} needs {expected}")
    if dtype == "bfloat16":
        words = np.frombuffer(body, dtype="<u2").astype(np.uint32) << 16
        return words.view(np.float32).reshape(shape)
    return np.frombuffer(body, dtype=np.dtype(_NUMPY_DTYPES[dtype]).newbyteorder("<")).reshape(shape).copy()
