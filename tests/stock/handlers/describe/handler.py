"""A stock handler that describes what it received, as JSON any server can write.

Images and bytes are summarised (mode, size, SHA-256 of the pixels / bytes), so the answer says
exactly what the server's request parsing produced without depending on how it encodes images.
"""

import hashlib
from typing import Any

from PIL import Image


def summary(value: Any) -> Any:
    if isinstance(value, Image.Image):
        return {
            "type": "Image",
            "mode": value.mode,
            "size": list(value.size),
            "sha256": hashlib.sha256(value.tobytes()).hexdigest(),
        }
    if isinstance(value, (bytes, bytearray)):
        return {"type": type(value).__name__, "len": len(value), "sha256": hashlib.sha256(value).hexdigest()}
    if isinstance(value, dict):
        return {str(k): summary(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [summary(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return {"type": type(value).__name__}


class EndpointHandler:
    def __init__(self, path: str = "") -> None:
        self.path = path

    def __call__(self, data: dict[str, Any]) -> Any:
        return {
            "keys": list(data),
            "types": {key: type(value).__name__ for key, value in data.items()},
            "data": summary(data),
        }
