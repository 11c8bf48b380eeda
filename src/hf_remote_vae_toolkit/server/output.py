"""What a handler may return to say more than a bare value: extra headers, or pre-encoded bytes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Output"]


@dataclass
class Output:
    """A handler result with response metadata.

    ``value`` is serialised like a bare return value (tensor, PIL image, bytes, JSON-able).
    ``media_type`` says what to send when the client accepts anything: with bytes, ``value`` is
    already encoded in that type (an MP4, a JPEG made on the GPU) and is sent as is; with a PIL
    image, the server encodes it as that type in its own thread pool, so image encoding never holds
    up the GPU worker. ``finish``, when set, turns ``value`` into the final value (for example video
    frames into MP4 bytes) in that same thread pool, after the worker has moved on to the next batch.
    ``headers`` are added to the response (``X-Tiled: 1``).
    """

    value: Any
    headers: dict[str, str] = field(default_factory=dict)
    media_type: str | None = None
    finish: Callable[[Any], Any] | None = None
