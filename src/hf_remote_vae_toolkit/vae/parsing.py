"""Parse a request once: the scheduler hooks and the call all need the same checked job."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar, cast

__all__ = ["parsed_once"]

_PARSED_KEY = "_hf_remote_vae_parsed"
_T = TypeVar("_T")


def parsed_once(data: Mapping[str, Any], parse: Callable[[Mapping[str, Any]], _T]) -> _T:
    """``parse(data)``, kept in the request's own dict: validate, batch_key, estimate_memory and the
    call each need the parsed job, and parsing an encode request converts its whole image."""
    cached = data.get(_PARSED_KEY)
    if cached is not None:
        return cast(_T, cached)
    job = parse(data)
    if isinstance(data, dict):
        data[_PARSED_KEY] = job
    return job
