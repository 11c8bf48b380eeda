"""A stock handler whose ``inputs`` string picks what it returns or raises.

- ``raise:<ExceptionName>``: raises that builtin exception with a message.
- ``image:<mode>``: a 24x16 PIL image of that mode (a gradient, alpha included where the mode has it).
- a name in ``VALUES``: that Python value (NaN, datetime, numpy scalars and arrays, ...).
- ``path``: the path the handler was built with.
- ``overlap``: sleeps 0.2 s and answers how many calls ever overlapped.
- any other string: a text-to-image prompt; answers an RGB image derived from the prompt.
"""

import collections
import dataclasses
import datetime
import enum
import hashlib
import math
import time
import uuid
from typing import Any

import numpy as np
import torch
from PIL import Image

WIDTH, HEIGHT = 24, 16


def _gradient(dtype: Any, scale: float) -> np.ndarray:
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH]
    return ((x * HEIGHT + y) * scale).astype(dtype)


def make_image(mode: str) -> Image.Image:
    if mode in ("I;16", "I", "F"):  # 16-bit, 32-bit integer and float pixels
        dtype, scale = {"I;16": ("<u2", 163.0), "I": ("<i4", 1000.0), "F": ("<f4", 0.25)}[mode]
        return Image.frombytes(mode, (WIDTH, HEIGHT), _gradient(dtype, scale).tobytes())
    base = _gradient(np.uint8, 0.66)
    rgba = np.stack([base, base[::-1], np.flip(base, 1), 255 - base], axis=-1).astype(np.uint8)
    image = Image.fromarray(rgba, mode="RGBA")
    return image if mode == "RGBA" else image.convert(mode)


@dataclasses.dataclass
class Box:
    label: str
    score: float


class Color(enum.Enum):
    RED = "red"


VALUES: dict[str, Any] = {
    "nan": {"value": math.nan},
    "inf": {"pos": math.inf, "neg": -math.inf},
    "datetime": {"at": datetime.datetime(2025, 8, 25, 12, 30, 5, 123456)},
    "datetime_tz": {"at": datetime.datetime(2025, 8, 25, 12, 30, tzinfo=datetime.timezone.utc)},
    "date": {"on": datetime.date(2025, 8, 25)},
    "float32": {"score": np.float32(1.2)},
    "float64": {"score": np.float64(0.9803440570831299)},
    "float16": {"score": np.float16(0.5)},
    "int64": {"count": np.int64(7)},
    "bool_": {"flag": np.bool_(True)},
    "ndarray": {"res": np.array([2.0]), "text": "I like you.", "float": 1.2},
    "ndarray2d": {"m": np.arange(6, dtype=np.float32).reshape(2, 3) / 3},
    "ndarray_nan": {"m": np.array([np.nan, 1.0])},
    "int_keys": {1: "one", 2: "two"},
    "tuple": (1, "two", 3.0),
    "nan_top": math.nan,
    "datetime64": {"at": np.datetime64("2025-08-25T12:30:05")},
    "float32_nan": {"m": np.array([np.nan, 0.1], dtype=np.float32)},
    "dataclass": {"box": Box("cat", 0.5)},
    "enum": {"color": Color.RED},
    "ordered_dict": collections.OrderedDict([("b", 1), ("a", 2)]),
    "none": None,
    "string": "hello",
    "unicode": {"text": "héllo ✓ 日本"},
    "big_int": {"n": 2**63},
    "huge_int": {"n": 2**64},
    "uuid": {"id": uuid.UUID("12345678-1234-5678-1234-567812345678")},
    "bytes": {"raw": b"\x00\x01"},
    "bytes_top": b"\x00\x01raw",
    "set": {"s": {1}},
    "tensor": torch.arange(4, dtype=torch.float32) / 4,
    "ndarray_only": np.arange(3, dtype=np.int64),
    "image_list": [Image.new("RGB", (4, 2), color="blue")],
    "image_in_json": [
        {"label": "cat", "mask": Image.new("RGB", (6, 3), color="red"), "score": 0.9995332956314087},
        {"label": "dog", "mask": Image.new("L", (6, 3), color=128), "score": 0.5},
    ],
}

ERRORS: dict[str, type[BaseException]] = {
    "ValueError": ValueError,
    "KeyError": KeyError,
    "TypeError": TypeError,
    "RuntimeError": RuntimeError,
    "AssertionError": AssertionError,
    "ZeroDivisionError": ZeroDivisionError,
}


class EndpointHandler:
    def __init__(self, path: str = "") -> None:
        self.path = path
        self.active = 0
        self.most_active = 0

    def __call__(self, data: dict[str, Any]) -> Any:
        inputs = data.get("inputs")
        if inputs == "overlap":  # how many calls ever ran at once (the stock toolkit runs one at a time)
            self.active += 1
            self.most_active = max(self.most_active, self.active)
            time.sleep(0.2)
            self.active -= 1
            return {"most_active": self.most_active}
        if not isinstance(inputs, str):
            raise ValueError(f"inputs must be a string naming a case, got {type(inputs).__name__}")
        kind, _, arg = inputs.partition(":")
        if kind == "raise":
            raise ERRORS[arg](f"bad input: {arg} from the handler")
        if kind == "image":
            return make_image(arg)
        if inputs == "path":
            return {"path": self.path}
        if inputs in VALUES:
            return VALUES[inputs]
        seed = hashlib.sha256(inputs.encode()).digest()
        return Image.frombytes(
            "RGB", (WIDTH, HEIGHT), (seed * (WIDTH * HEIGHT * 3 // len(seed) + 1))[: WIDTH * HEIGHT * 3]
        )
