"""What a handler may return to say more than a bare value: extra headers, or pre-encoded bytes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["Output"]


@dataclass
class Output:
    """A handler result with response metadata.

    ``value`` is serialised like a bare return value (tensor, PIL image, bytes, JSON-able), unless
    ``media_type`` is set: then ``value`` is bytes already encoded in that type (a JPEG made on the
    GPU, an MP4) and is sent as is. ``headers`` are added to the response (``X-Tiled: 1``).
    """

    value: Any
    headers: dict[str, str] = field(default_factory=dict)
    media_type: str | None = None
