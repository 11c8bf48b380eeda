"""The handler contract: what a handler receives and may return, and the optional steps it may add.

This module is the bottom layer: the server (``server/``) and the VAE handlers (``vae/``) both import it,
and it imports neither, nor torch.

A stock Inference Endpoints handler is two methods, and runs here exactly as on the stock toolkit::

    class EndpointHandler:
        def __init__(self, path: str): ...              # once, with the model directory
        def __call__(self, data: dict) -> Any: ...      # per request, data as the stock toolkit builds it

A handler that wants more (the VAE handlers do) adds an explicit **parse step**. The server then never
calls ``__call__``; it runs, for each request::

    job = handler.parse(data, request)        # a thread of the server's pool: checks, no GPU work (400/413 here)
    key = handler.batch_key(job)              # optional: equal keys may share one call
    est = handler.estimate_memory(job)        # optional: GPU bytes; admission and batching bound
    outs = handler.call_batch([job, ...])     # on the GPU worker: one result per job, in order

``request`` is a :class:`RequestInfo`: the negotiated ``Accept``, the typed query (repeated keys as
lists), the headers and the request id: what a VAE handler needs beyond the stock ``data`` dict, passed as
a value instead of keys planted in ``data``. ``job`` is whatever ``parse`` returns; it flows to the other
steps unchanged. Two more optional methods, on any handler:

- ``setup(worker: WorkerInfo)``: called once per worker after warm-up with the worker's device and GPU
  memory budget (the server's numbers, which override what the handler guessed on its own);
- ``warmup()``: called once per worker before the port opens.

A result may be a bare value (tensor, PIL image, bytes, JSON-able) or an :class:`Output`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

__all__ = [
    "Output",
    "StreamedBody",
    "RequestInfo",
    "WorkerInfo",
    "ParsingHandler",
    "has_parse_step",
    "request_parameters",
]


@dataclass
class Output:
    """A handler result with response metadata.

    ``value`` is serialised like a bare return value (tensor, PIL image, bytes, JSON-able).
    ``media_type`` says what ``value`` is or should become: with bytes, ``value`` is already encoded in that
    type (an MP4) and is sent as is, labelled with that type; with a PIL image, the server encodes it as that
    type (``encode_options`` such as ``{"quality": 90}`` for JPEG) in its own thread pool, so image encoding
    never holds up the GPU worker. ``finish``, when set, turns ``value`` into the final value (video frames into
    MP4 bytes) in that same thread pool, after the worker has moved on. ``headers`` are added to the response.
    ``stream``, when set, is the body itself, produced while it is sent (a :class:`StreamedBody`); ``value``,
    ``finish`` and ``encode_options`` are then unused.
    """

    value: Any
    headers: dict[str, str] = field(default_factory=dict)
    media_type: str | None = None
    finish: Callable[[Any], Any] | None = None
    encode_options: dict[str, Any] = field(default_factory=dict)
    stream: StreamedBody | None = None


@runtime_checkable
class StreamedBody(Protocol):
    """A response body produced while it is sent (chunked transfer encoding, status 200 sent first).

    - ``produce()`` runs on the GPU worker right after ``call_batch`` returned, and the worker counts busy
      until it returns: it does the device work (a video decode, chunk by chunk) and hands each chunk on
      through a small bounded queue. It must not raise: a failure is handed on to the iterator.
    - iterating yields the body's byte chunks, in the server's thread pool; it raises when ``produce``
      failed, and the server then ends the connection without the closing chunk, so the client sees a
      truncated body (the status code was already sent).
    - ``close()``: the client left, or the response ended; ``produce`` stops at its next chunk. Safe to call
      more than once, from any thread.
    - ``media_type``: the response's ``Content-Type``.
    """

    media_type: str

    def produce(self) -> None: ...

    def __iter__(self) -> Iterator[bytes]: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class RequestInfo:
    """What the server knows about a request beyond the stock ``data`` dict.

    ``accept``: the negotiated response type (``None``: the client takes anything: the handler's natural
    output). ``query``: the query string read the protocol's way (repeated keys -> lists, ``true``/``false``
    any case -> bools, integers, decimals; ``shape`` always a list). ``body_type``: the request's media type
    (``None`` when the client sent none). ``body_parameters``: whether ``data["parameters"]`` came from the
    body itself (a JSON body's own object) rather than from the query string. ``headers``: request headers,
    lower-case names.
    """

    accept: str | None = None
    query: Mapping[str, Any] = field(default_factory=dict)
    body_type: str | None = None
    body_parameters: bool = False
    headers: Mapping[str, str] = field(default_factory=dict)
    request_id: str = ""


@dataclass(frozen=True)
class WorkerInfo:
    """One worker, as ``setup`` sees it: its device (``"cuda:0"``, ``"cpu"``), its GPU memory budget for one
    call's activations (``None``: no limit known), and the most requests the scheduler will give one call."""

    device: str = "cpu"
    memory_budget_bytes: int | None = None
    max_batch_size: int = 1


@runtime_checkable
class ParsingHandler(Protocol):
    """A handler with the explicit parse step (``batch_key``, ``estimate_memory``, ``setup`` and ``warmup``
    are optional and looked up separately)."""

    def parse(self, data: dict[str, Any], request: RequestInfo) -> Any: ...

    def call_batch(self, jobs: list[Any]) -> list[Any]: ...


def has_parse_step(handler: Any) -> bool:
    """True when the server should drive ``handler`` through parse/call_batch instead of ``__call__``."""
    return callable(getattr(handler, "parse", None)) and callable(getattr(handler, "call_batch", None))


def request_parameters(data: Mapping[str, Any], request: RequestInfo) -> dict[str, Any]:
    """The request's parameters, typed, for a handler with a parse step.

    A JSON body's own ``"parameters"`` object wins (the query then only fills keys it lacks); any other body
    takes its parameters from the typed query. Raises ``TypeError`` when a JSON ``parameters`` is not an object.
    """
    query = dict(request.query)
    if not request.body_parameters:
        return query
    body = data["parameters"]
    if body is None:
        return query
    if not isinstance(body, dict):
        raise TypeError(f'"parameters" must be a JSON object, got {type(body).__name__}')
    return {**query, **body}
