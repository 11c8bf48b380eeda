"""The HTTP layer under the app: uvicorn's two parsers with connection limits, and graceful shutdown.

uvicorn serves HTTP/1.1 with h11 (pure Python, its default) or httptools (C, picked by ``http="auto"``
when installed, as ``uvicorn[standard]`` does). Both are used as they come, with these additions:

=================================  ==========================================================================
connection limit                   what happens
=================================  ==========================================================================
``HEADER_TIMEOUT_S`` (10 s)        a connection that has not sent a whole request head within 10 s of opening
                                   (or of its previous answer) is closed: idle and half-sent-header
                                   connections do not stay open
``KEEP_ALIVE_TIMEOUT_S`` (5 s)     an idle kept-alive connection is closed 5 s after its last answer
                                   (uvicorn's ``timeout_keep_alive``)
``MAX_HEADER_BYTES`` (64 KiB)      a larger request head is answered ``431`` (httptools) or ``400`` (h11,
                                   its own limit) and the connection closed
``Connection: upgrade``            httptools hands the app an upgrade request with its body dropped (the app
                                   sees an empty body and answers the wrong question): a request with a body
                                   is answered ``400`` JSON and the connection closed; one without is
                                   answered normally, then the connection is closed. ``Upgrade: websocket``
                                   is never handed to a WebSocket protocol (``ws="none"``: this server has no
                                   WebSocket routes; with the websockets package installed uvicorn did, and
                                   a POST so upgraded never got an answer)
=================================  ==========================================================================

Request bodies have their own read limits (``app.py``: ``BODY_TIMEOUT_S``, ``BODY_MIN_RATE``).

Closing is lingering: when the server closes a connection whose client is still sending (a ``413`` or
``408`` before the whole body arrived), a plain close makes the kernel answer the client's next bytes with a
reset, and the client often reports "connection reset" instead of reading the answer. The connection is
half-closed instead (the answer and a FIN go out), what the client still sends is read and dropped for up
to ``LINGER_S`` (2 s), then it is closed.

``GracefulServer`` is ``uvicorn.Server`` with the shutdown this service needs on SIGTERM (Kubernetes,
Inference Endpoints): first the app drains (new requests get ``503`` JSON with ``Retry-After``, ``/health``
answers 503, queued requests get ``503`` JSON, running ones finish within ``SHUTDOWN_GRACE_S``), then
uvicorn closes the listening socket and the connections; the process exits 0, not by re-raising the signal.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import threading
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from .. import protocol

__all__ = [
    "HEADER_TIMEOUT_S",
    "KEEP_ALIVE_TIMEOUT_S",
    "MAX_HEADER_BYTES",
    "PARSERS",
    "GracefulServer",
    "protocol_class",
    "uvicorn_config",
]

HEADER_TIMEOUT_S = 10.0
LINGER_S = 2.0
KEEP_ALIVE_TIMEOUT_S = 5
MAX_HEADER_BYTES = 64 * 1024

#: ``http`` choices: ``auto`` is httptools when installed, else h11 (uvicorn's own rule).
PARSERS = ("auto", "h11", "httptools")


def _json_close(status: int, reason: str, message: str) -> bytes:
    body = b'{"error":' + _quote(message) + b"}"
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: {protocol.JSON}\r\ncontent-length: {len(body)}\r\n"
        "connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


def _quote(text: str) -> bytes:
    import json

    return json.dumps(text).encode("utf-8")


class _LingeringTransport:
    """A transport whose ``close()`` half-closes (after the buffered answer), keeps reading for ``LINGER_S``
    and then closes; everything else is the wrapped transport's."""

    def __init__(
        self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop, sending: Callable[[], bool]
    ) -> None:
        self._transport = transport
        self._loop = loop
        self._sending = sending  # whether the client may still be sending a request body
        self.lingering = False

    def close(self) -> None:
        if self.lingering or self._transport.is_closing():
            return
        if not self._sending():  # an idle keep-alive connection (a shutdown, a head timeout): close at once
            self._transport.close()
            return
        self.lingering = True
        try:
            if self._transport.can_write_eof():
                self._transport.write_eof()
            self._transport.resume_reading()
        except (OSError, RuntimeError, NotImplementedError):
            self._transport.close()
            return
        self._loop.call_later(LINGER_S, self._transport.close)

    def is_closing(self) -> bool:
        return self.lingering or self._transport.is_closing()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


def _cycle_sending(protocol: Any) -> bool:
    """True while the protocol's current request has body bytes still to come from the client."""
    cycle = getattr(protocol, "cycle", None)
    return bool(cycle is not None and getattr(cycle, "more_body", False))


class _HeadTimer:
    """Closes a connection that has not sent a whole request head within ``HEADER_TIMEOUT_S`` of opening
    or of its last answer. Mixed into both protocol classes; ``_cycle_started`` says whether a request
    began since the timer was armed."""

    transport: asyncio.Transport
    loop: asyncio.AbstractEventLoop
    header_timeout_s: float = HEADER_TIMEOUT_S
    _head_timer: asyncio.TimerHandle | None = None
    _armed_for: Any = None

    def _client_sending(self) -> bool:
        return _cycle_sending(self)

    def _arm_head_timer(self) -> None:
        self._cancel_head_timer()
        self._armed_for = getattr(self, "cycle", None)
        self._head_timer = self.loop.call_later(self.header_timeout_s, self._head_timeout)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timeout(self) -> None:
        self._head_timer = None
        cycle = getattr(self, "cycle", None)
        idle = cycle is self._armed_for and (cycle is None or cycle.response_complete)
        if idle and not self.transport.is_closing():
            self.transport.close()


def _make_h11() -> type[asyncio.Protocol]:
    class H11(_HeadTimer, H11Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self._lingering = _LingeringTransport(transport, self.loop, self._client_sending)  # type: ignore[arg-type]
            super().connection_made(self._lingering)  # type: ignore[arg-type]
            self._arm_head_timer()

        def data_received(self, data: bytes) -> None:
            if not self._lingering.lingering:  # after close: read and dropped
                super().data_received(data)

        def connection_lost(self, exc: Exception | None) -> None:
            self._cancel_head_timer()
            super().connection_lost(exc)

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm_head_timer()

        def _unsupported_upgrade_warning(self) -> None:
            pass  # the request is answered as a plain one; uvicorn's warning would suggest installing websockets

    return H11


def _make_httptools() -> type[asyncio.Protocol]:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class HttpTools(_HeadTimer, HttpToolsProtocol):
        _head_bytes = 0
        _refused = False

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self._lingering = _LingeringTransport(transport, self.loop, self._client_sending)  # type: ignore[arg-type]
            super().connection_made(self._lingering)  # type: ignore[arg-type]
            self._arm_head_timer()

        def connection_lost(self, exc: Exception | None) -> None:
            self._cancel_head_timer()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            if self._refused or self._lingering.lingering:  # after close: read and dropped
                return
            super().data_received(data)
            if self._head_bytes > MAX_HEADER_BYTES and not self._refused:
                self._refuse_head()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._head_bytes = 0

        def on_url(self, url: bytes) -> None:
            self._head_bytes += len(url)
            super().on_url(url)

        def on_header(self, name: bytes, value: bytes) -> None:
            self._head_bytes += len(name) + len(value) + 4
            super().on_header(name, value)

        def on_body(self, body: bytes) -> None:
            if not self._refused:
                super().on_body(body)

        def on_message_complete(self) -> None:
            if not self._refused:
                super().on_message_complete()

        def _refuse_head(self) -> None:
            self._refuse(431, "Request Header Fields Too Large", "the request head is over 64 KiB")

        def on_headers_complete(self) -> None:
            if self._head_bytes > MAX_HEADER_BYTES:
                self._refuse_head()
                return
            if self.parser.should_upgrade() and not self._should_upgrade():
                # httptools drops the body of an upgrade request: the app would see an empty one
                has_body = any(
                    (n == b"content-length" and v.strip() not in (b"", b"0")) or n == b"transfer-encoding"
                    for n, v in self.headers
                )
                if has_body:
                    self._refuse(400, "Bad Request", "protocol upgrades (Connection: upgrade) are not supported")
                    return
                super().on_headers_complete()
                if self.cycle is not None:
                    self.cycle.keep_alive = False  # answer this one, then close: nothing after it can be read
                return
            super().on_headers_complete()

        def _unsupported_upgrade_warning(self) -> None:
            pass  # handled above; uvicorn's warning would suggest installing websockets

        def _refuse(self, status: int, reason: str, message: str) -> None:
            self._refused = True
            if not self.transport.is_closing():
                self.transport.write(_json_close(status, reason, message))
                self.transport.close()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm_head_timer()

    return HttpTools


def protocol_class(http: str = "auto") -> type[asyncio.Protocol]:
    """The protocol class for ``http``: ``h11``, ``httptools`` or ``auto`` (httptools when installed)."""
    if http not in PARSERS:
        raise ValueError(f"http must be one of {PARSERS}, got {http!r}")
    if http in ("auto", "httptools"):
        try:
            import httptools  # noqa: F401
        except ImportError:
            if http == "httptools":
                raise ValueError("http=httptools needs the httptools package (pip install httptools)") from None
            return _make_h11()
        return _make_httptools()
    return _make_h11()


def uvicorn_config(app: Any, *, http: str = "auto", **kwargs: Any) -> uvicorn.Config:
    """The one uvicorn configuration of the server (CLI, tests, stress suite): the parser with the limits
    above, the keep-alive timeout, no access log (the app logs one line per request), lifespan on."""
    options: dict[str, Any] = {
        "lifespan": "on",
        "access_log": False,
        "timeout_keep_alive": KEEP_ALIVE_TIMEOUT_S,
        "ws": "none",
        "h11_max_incomplete_event_size": MAX_HEADER_BYTES,
    }
    options.update(kwargs)
    return uvicorn.Config(app, http=protocol_class(http), **options)


class GracefulServer(uvicorn.Server):
    """``uvicorn.Server`` whose shutdown first lets the app drain (``drain``: an async callable, the app's
    ``app.state.drain``), and which exits normally after a signal instead of re-raising it."""

    def __init__(self, config: uvicorn.Config, drain: Callable[[], Awaitable[None]] | None = None) -> None:
        super().__init__(config)
        self._drain = drain

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        handled = (signal.SIGINT, signal.SIGTERM)
        original = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)
        # a graceful stop on SIGTERM is a success: exit 0 (uvicorn re-raises the signal, exiting with -15)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self._drain is not None and not self.force_exit:
            await self._drain()
        await super().shutdown(sockets=sockets)
