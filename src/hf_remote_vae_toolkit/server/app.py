"""The app factory: routes, the request path, and the one place errors become responses.

``create_app(settings, handler=None)`` builds a Starlette app whose lifespan prepares the workers (loads a
handler per device, warms them up, sizes the memory budget: ``workers.py``) and starts the scheduler
*before* uvicorn opens the port, so "port open" means ready. Nothing happens at import time.

One request (``POST /`` or ``/predict``)::

    auth -> size limit -> Accept negotiated (406 before any work) -> body read (bounded)
    -> in a thread: codecs.decode_request (the stock data dict)
                    -> handler.parse / batch_key / estimate_memory (handlers with a parse step)
    -> scheduler.submit (413 over budget / 429 queue full) -> a GPU worker runs it
    -> wait for the result, the client leaving, or REQUEST_TIMEOUT_S (504)
    -> in a thread: codecs.encode_response -> response with X-Request-Id

Errors: what the server decides has its own status (401, 406, 413, 415, 429, 503, 504, CUDA OOM 503).
What a stock handler raises, and a stock result the serialiser refuses, is a 400 with the exception's
message, as on the stock toolkit. A handler with a parse step reports bad input by raising in ``parse``
(a ``ServiceError`` keeps its status; any other exception there is a 400); an unexpected exception in its
``call_batch`` is a 500 whose message hides the internals (the traceback is logged).

Reliability (what the stress suite, ``benchmarks/stress``, holds the server to):

- malformed input is a 4xx JSON error decided before any model work: a request head with more than
  ``MAX_HEADERS`` headers or ``MAX_HEADER_BYTES`` bytes is a 431; a query value this server cannot read (an
  integer past Python's 4,300-digit limit) a 400; whatever ``decode_request`` or a handler's ``parse`` raises
  is a 400 (a ``ServiceError`` keeps its status);
- a body is read within limits: ``BODY_TIMEOUT_S`` without a byte, or an average under ``BODY_MIN_RATE``
  bytes/s once ``BODY_TIMEOUT_S`` have passed, is a 408 and the connection is closed (a 1 byte/s upload is
  cut off after 10 s); the body is read before the request is queued, so a slow client never holds a worker;
- a ``BaseException`` from handler code (``SystemExit``, ``KeyboardInterrupt``) is a JSON 500 and the
  server goes on; ``/health`` answers 503 while the scheduler reports a worker dead or stuck
  (``Scheduler.health``) and while draining;
- on shutdown (SIGTERM) ``drain`` runs first (``server/http.py: GracefulServer``): new requests get a 503
  with ``Retry-After``, queued ones a 503 (the client retries them), running ones finish within
  ``SHUTDOWN_GRACE_S``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import math
import sys
import time
import traceback
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from .. import protocol
from ..contract import Output, RequestInfo, StreamedBody, has_parse_step
from ..errors import (
    HandlerError,
    InvalidRequest,
    NotReady,
    PayloadTooLarge,
    RequestTimeout,
    ServiceError,
    Unauthorized,
)
from ..settings import Settings
from . import codecs
from .loader import HandlerLoadError
from .metrics import Metrics
from .scheduler import Scheduler
from .workers import is_out_of_memory, prepare_workers

__all__ = ["create_app", "start_serving", "BODY_TIMEOUT_S", "BODY_MIN_RATE", "MAX_HEADERS", "MAX_HEADER_BYTES"]

log = logging.getLogger("hf_remote_vae_toolkit")
GiB = 1024**3

#: Body read limits: no byte for this long, or (after it) an average rate under ``BODY_MIN_RATE``: 408.
BODY_TIMEOUT_S = 10.0
#: Bytes per second a body must average once ``BODY_TIMEOUT_S`` have passed (1 KiB/s).
BODY_MIN_RATE = 1024.0
#: Request head limits (431): header count and total bytes of names and values.
MAX_HEADERS = 100
MAX_HEADER_BYTES = 64 * 1024

#: Accept values the stock toolkit echoes verbatim as the response's Content-Type.
_STOCK_ECHOED_ACCEPT = frozenset(
    {
        "application/json",
        "application/json; charset=UTF-8",
        "image/png",
        "image/jpeg",
        "image/tiff",
        "image/bmp",
        "image/gif",
        "image/webp",
    }
)


if sys.version_info >= (3, 11):
    _deadline = asyncio.timeout_at
else:  # pragma: no cover - Python 3.10: asyncio has no timeout_at; uvicorn's own timeouts still apply

    @contextlib.asynccontextmanager
    async def _deadline(when: float) -> AsyncIterator[Any]:
        class _NoDeadline:
            def reschedule(self, when: float | None) -> None:
                pass

        yield _NoDeadline()


class _ClientGone(Exception):
    """The client disconnected before its answer was ready."""


@dataclass
class _Admitted:
    """A request ready for the scheduler: what the handler runs on, its batch key and memory estimate."""

    payload: Any
    key: Any
    estimate: int


def create_app(settings: Settings, handler: Any = None) -> Starlette:
    """The server app. ``handler``: an already-built handler object (tests), else loaded from
    ``settings.model_dir`` in the lifespan."""
    metrics = Metrics()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        scheduler = await run_in_threadpool(start_serving, app, settings, handler)
        try:
            yield
        finally:
            app.state.ready = False
            await run_in_threadpool(scheduler.stop, settings.shutdown_grace_s)

    async def health(request: Request) -> Response:
        state = request.app.state
        if getattr(state, "draining", False):
            return _json_response({"error": "shutting down"}, 503, {"Retry-After": "1"})
        if not getattr(state, "ready", False):
            return _json_response({"error": "not ready"}, 503)
        problem = state.scheduler.health()
        if problem is not None:
            return _json_response({"error": f"unhealthy: {problem}"}, 503)
        return PlainTextResponse("Ok")

    async def drain() -> None:
        """Shutdown, step one (SIGTERM): refuse new requests (503), fail queued ones (503), let running ones
        finish and their answers go out, for up to ``SHUTDOWN_GRACE_S``."""
        app.state.draining = True
        scheduler: Scheduler | None = getattr(app.state, "scheduler", None)
        if scheduler is None:
            return
        log.info("Shutting down: draining (up to %g s for running requests)", settings.shutdown_grace_s)
        await run_in_threadpool(scheduler.stop, settings.shutdown_grace_s)
        deadline = time.monotonic() + settings.shutdown_grace_s
        while app.state.active > 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)

    async def metrics_route(request: Request) -> Response:
        return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    async def predict(request: Request) -> Response:
        started = time.perf_counter()
        request_id = request.headers.get(protocol.HEADER_REQUEST_ID) or uuid.uuid4().hex[:16]
        metrics.in_flight.inc()
        request.app.state.active += 1
        try:
            response = await _predict(request, request_id)
        except _ClientGone:
            response = Response(status_code=499)
        except ServiceError as exc:
            response = _error_response(exc)
        except Exception:
            log.error("request %s failed:\n%s", request_id, traceback.format_exc())
            response = _error_response(
                HandlerError(f"the handler failed; the server log has the traceback (request id {request_id})")
            )
        finally:
            metrics.in_flight.dec()
            request.app.state.active -= 1
        response.headers[protocol.HEADER_REQUEST_ID] = request_id
        if response.status_code >= 400 and _body_unread(request):
            # answered before its body was read: close, so no unread body bytes reach the next request
            response.headers["Connection"] = "close"
        elapsed = time.perf_counter() - started
        metrics.requests.labels(request.method, str(response.status_code)).inc()
        metrics.latency.labels(request.url.path).observe(elapsed)
        log.info(
            "%s %s | Duration: %.2f ms | Status: %d | Request-Id: %s",
            request.method,
            request.url.path,
            elapsed * 1000,
            response.status_code,
            request_id,
        )
        return response

    async def _predict(request: Request, request_id: str) -> Response:
        if getattr(request.app.state, "draining", False):
            raise NotReady("the server is shutting down; retry on another replica", retry_after=1)
        if not getattr(request.app.state, "ready", False):
            raise NotReady("the model is not loaded yet; retry shortly", retry_after=1)
        _check_head(request)
        _check_auth(request, settings)
        raw_accept = request.headers.get("accept")
        accept = codecs.negotiate(raw_accept)
        items = request.query_params.multi_items()
        query = _typed_query(items) if items else {}
        body = await _read_body(request, settings.max_request_bytes)
        request.state.body_read = True
        metrics.bytes_in.inc(len(body))
        scheduler: Scheduler = request.app.state.scheduler
        parse_step: bool = request.app.state.parse_step
        info = RequestInfo(
            accept=accept,
            query=query,
            headers=dict(request.headers) if parse_step else {},
            request_id=request_id,
        )
        content_type = request.headers.get("content-type")
        admit_args = (scheduler.handler, parse_step, content_type, body, items, info)
        if not parse_step and _cheap_to_read(content_type, len(body)):
            admitted = _guarded(_admit, *admit_args)  # no handler code, microseconds: no thread hop
        else:
            admitted = await run_in_threadpool(_guarded, _admit, *admit_args)
        del body
        job = scheduler.submit(admitted.payload, key=admitted.key, estimate=admitted.estimate)
        try:
            result = await _wait(request, scheduler, job, settings.request_timeout_s)
        except (ServiceError, _ClientGone):
            raise
        except Exception as exc:
            raise _handler_failure(exc, parse_step, request_id) from exc
        if isinstance(result, Output) and result.stream is not None:
            if result.headers.get(protocol.HEADER_TILED) == "1":
                metrics.tiled.inc()
            return _StreamedResponse(result.stream, result.headers, request_id, metrics)
        try:
            if not parse_step and _cheap_to_write(result):
                payload, content_type, headers = codecs.encode_response(result, accept, stock=True)
            else:
                payload, content_type, headers = await run_in_threadpool(
                    _guarded, codecs.encode_response, result, accept, stock=not parse_step
                )
        except ServiceError:
            raise
        except Exception as exc:
            raise _handler_failure(exc, parse_step, request_id) from exc
        if not parse_step and raw_accept in _STOCK_ECHOED_ACCEPT:
            content_type = raw_accept
        if headers.get(protocol.HEADER_TILED) == "1":
            metrics.tiled.inc()
        metrics.bytes_out.inc(len(payload))
        # the type as chosen, without the charset Starlette would add to text/plain (MP4 bytes, for diffusers)
        return Response(payload, headers={**headers, "content-type": content_type})

    middleware = []
    if settings.cors_allow_origins:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=list(settings.cors_allow_origins),
                allow_methods=["GET", "POST", "OPTIONS"],
                allow_headers=["*"],
                expose_headers=[
                    "shape",
                    "dtype",
                    protocol.HEADER_REQUEST_ID,
                    protocol.HEADER_TILED,
                    protocol.HEADER_FRAMES,
                    "Retry-After",
                ],
            )
        )
    app = Starlette(
        routes=[
            Route("/", health, methods=["GET"]),
            Route("/health", health, methods=["GET"]),
            Route("/", predict, methods=["POST"]),
            Route("/predict", predict, methods=["POST"]),
            Route("/metrics", metrics_route, methods=["GET"]),
        ],
        middleware=middleware,
        lifespan=lifespan,
        exception_handlers={HTTPException: _http_exception},  # type: ignore[dict-item]
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.ready = False
    app.state.draining = False
    app.state.active = 0
    app.state.drain = drain
    return app


def start_serving(app: Starlette, settings: Settings, handler: Any = None) -> Scheduler:
    """Prepare the workers and start the scheduler: what the lifespan does before the port opens. Blocking;
    callable without a lifespan (an app embedded in another server, ``stock.py``). Returns the scheduler."""
    try:
        workers = prepare_workers(settings, handler)
    except HandlerLoadError as exc:
        log.error("The handler failed to load: %s", exc)
        log.error("To fix: %s", exc.hint)
        raise
    scheduler = Scheduler(
        workers.handlers,
        app.state.metrics,
        max_queue_size=settings.max_queue_size,
        request_timeout_s=settings.request_timeout_s,
        max_batch_size=workers.max_batch_size,
        max_batch_delay_ms=settings.max_batch_delay_ms,
        memory_budget=workers.memory_budget,
        devices=workers.devices,
    )
    scheduler.start()
    app.state.handler = workers.handler
    app.state.parse_step = has_parse_step(workers.handler)
    app.state.scheduler = scheduler
    app.state.ready = True
    if workers.memory_budget is not None:
        log.info("GPU memory budget: %.2f GiB per worker", workers.memory_budget / GiB)
    log.info("Ready: %d worker(s)", len(workers.handlers))
    return scheduler


def _admit(
    handler: Any,
    parse_step: bool,
    content_type: str | None,
    body: bytes,
    items: list[tuple[str, str]],
    info: RequestInfo,
) -> _Admitted:
    """Body -> the stock data dict -> (handlers with a parse step) the parsed job, its batch key and memory
    estimate. Runs in a thread: image decoding and parsing are CPU work, and handler code never runs on the
    event loop."""
    try:
        decoded = codecs.decode_request(content_type, body, items, dict(info.query), lazy_images=parse_step)
    except ServiceError:
        raise
    except Exception as exc:  # RecursionError, ValueError, ...: the body is the client's to fix
        raise InvalidRequest(f"the request body could not be read: {_describe(exc)}") from exc
    if not parse_step:
        return _Admitted(decoded.data, None, 0)
    info = RequestInfo(
        accept=info.accept,
        query=info.query,
        body_type=decoded.body_type,
        body_parameters=decoded.body_parameters,
        headers=info.headers,
        request_id=info.request_id,
    )
    try:
        job = handler.parse(decoded.data, info)
        key = handler.batch_key(job) if callable(getattr(handler, "batch_key", None)) else None
        estimate = int(handler.estimate_memory(job)) if callable(getattr(handler, "estimate_memory", None)) else 0
    except ServiceError:
        raise
    except MemoryError as exc:
        raise PayloadTooLarge("this request needs more memory than the server has; send a smaller one") from exc
    except Exception as exc:
        # what parse raises about the request is the client's to fix (the documented rule: any exception there
        # is a 400); the traceback goes to the log at debug level
        log.debug("parse raised", exc_info=True)
        raise InvalidRequest(_describe(exc)) from exc
    return _Admitted(job, key, estimate)


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    if isinstance(exc, RecursionError):
        text = "the request is nested too deeply"
    return text if len(text) <= 500 else text[:500] + "..."


#: Bodies read on the event loop itself (a thread hop costs more than reading them): JSON, audio and tensor
#: bytes up to this size, for stock handlers (a handler with a parse step always parses in a thread).
INLINE_READ_BYTES = 1024 * 1024
_INLINE_SCALARS = (str, int, float, bool, type(None), bytes)


def _cheap_to_read(content_type: str | None, size: int) -> bool:
    kind = protocol.media_type(content_type)
    if kind is None or size > INLINE_READ_BYTES:
        return False  # no Content-Type: the body may be an image to decode
    return kind in (protocol.JSON, protocol.TENSOR_BINARY) or kind.startswith("audio/")


def _cheap_to_write(result: Any, depth: int = 2) -> bool:
    """A small plain result (scalars, short lists and dicts of them) is serialised on the event loop; anything
    that may be slow to write (images, arrays, tensors, big containers) goes to the thread pool."""
    if isinstance(result, _INLINE_SCALARS):
        return not isinstance(result, (str, bytes)) or len(result) <= INLINE_READ_BYTES
    if depth and isinstance(result, (list, tuple)) and len(result) <= 64:
        return all(_cheap_to_write(item, depth - 1) for item in result)
    if depth and isinstance(result, dict) and len(result) <= 64:
        return all(_cheap_to_write(item, depth - 1) for item in result.values())
    return False


def _guarded(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Run handler-facing code in a pool thread; a ``BaseException`` it raises (``SystemExit``,
    ``KeyboardInterrupt``) becomes a 500 instead of unwinding the event loop."""
    try:
        return fn(*args, **kwargs)
    except Exception:
        raise
    except BaseException as exc:
        log.error("handler code raised %r; the request fails, the server goes on", exc)
        raise HandlerError(f"the handler raised {type(exc).__name__}") from None


def _typed_query(items: list[tuple[str, str]]) -> dict[str, Any]:
    """The query read the protocol's way; a value it cannot read (an integer past Python's digit limit) is a 400."""
    try:
        return protocol.parse_query(items)
    except (ValueError, RecursionError) as exc:
        raise InvalidRequest(f"a query parameter could not be read: {_describe(exc)}") from None


def _check_head(request: Request) -> None:
    raw = request.scope.get("headers") or []
    size = sum(len(k) + len(v) for k, v in raw)
    if len(raw) > MAX_HEADERS or size > MAX_HEADER_BYTES:
        raise ServiceError(
            f"the request has {len(raw)} headers of {size} bytes; the limits are {MAX_HEADERS} headers and "
            f"{MAX_HEADER_BYTES} bytes",
            status_code=431,
        )


def _handler_failure(exc: Exception, parse_step: bool, request_id: str) -> ServiceError:
    """What a handler (or the serialiser of its result) raised -> the error the client gets."""
    if is_out_of_memory(exc):
        return NotReady("the GPU ran out of memory for this request; retry, or send a smaller one", retry_after=1)
    if not parse_step:
        # the stock toolkit's answer to anything a handler raises: 400 with the message
        log.warning("request %s: the handler raised %r", request_id, exc)
        return InvalidRequest(str(exc))
    log.error("request %s failed:\n%s", request_id, "".join(traceback.format_exception(exc)))
    return HandlerError(f"the handler failed; the server log has the traceback (request id {request_id})")


def _json_response(content: Any, status_code: int, headers: dict[str, str] | None = None) -> Response:
    return Response(codecs.encode_json(content), status_code=status_code, headers=headers, media_type=protocol.JSON)


PREALLOCATE_BYTES = 16 * 1024 * 1024


async def _read_body(request: Request, limit: int) -> bytearray:
    """The request body, bounded by ``limit`` bytes and by the slow-body rule (``_body_too_slow``).

    Read into one growing buffer (no joining of chunks: a 1 MiB body is copied once), under one deadline that
    is moved after each chunk (not a timer per chunk).
    """
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and len(declared) < 20 and int(declared) > limit:
        raise PayloadTooLarge(f"body is {int(declared)} bytes; the limit is {limit} bytes (MAX_REQUEST_BYTES)")
    # with a declared length the buffer is allocated once and filled in place (up to PREALLOCATE_BYTES: a client
    # that declares a large body and sends little costs no more memory than it sends, beyond that)
    known = int(declared) if declared and declared.isdigit() and len(declared) < 20 else 0
    body = bytearray(min(known, PREALLOCATE_BYTES))
    size = 0
    loop = asyncio.get_running_loop()
    started = loop.time()

    def next_deadline() -> float:
        # the next chunk must come within BODY_TIMEOUT_S, and after that the average must hold BODY_MIN_RATE
        elapsed = loop.time() - started
        wait = BODY_TIMEOUT_S if elapsed < BODY_TIMEOUT_S else (size / BODY_MIN_RATE) - elapsed
        if wait <= 0:
            raise _body_too_slow(size, elapsed)
        return loop.time() + wait

    try:
        async with _deadline(next_deadline()) as deadline:
            async for chunk in request.stream():
                end = size + len(chunk)
                if end > limit:
                    raise PayloadTooLarge(f"body exceeds the limit of {limit} bytes (MAX_REQUEST_BYTES)")
                body[size:end] = chunk  # in place while within the declared length, else it grows
                size = end
                deadline.reschedule(next_deadline())
    except TimeoutError:
        raise _body_too_slow(size, loop.time() - started) from None
    except ClientDisconnect:
        raise _ClientGone() from None
    if size < len(body):
        del body[size:]
    return body


def _body_unread(request: Request) -> bool:
    """True when the request declared a body that the app has not read to its end."""
    if getattr(request.state, "body_read", False):
        return False
    headers = request.headers
    length = headers.get("content-length", "").strip()
    return "transfer-encoding" in headers or (bool(length) and length != "0")


def _body_too_slow(size: int, elapsed: float) -> ServiceError:
    # the body is unread, so predict closes the connection after this answer
    return ServiceError(
        f"the request body arrived too slowly ({size} bytes in {elapsed:.1f} s): a body must send a byte at "
        f"least every {BODY_TIMEOUT_S:g} s and average {BODY_MIN_RATE:g} bytes/s after that",
        status_code=408,
    )


async def _wait_disconnect(request: Request) -> None:
    # After the body is read, the next ASGI message is the disconnect (or nothing, until the
    # response is sent and this task is cancelled).
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


#: How long a request waits for its result before it starts watching for the client leaving: most answers
#: come sooner, and the watcher (a task reading the connection) is the costliest part of a fast request.
WATCH_AFTER_S = 0.02


async def _wait(request: Request, scheduler: Scheduler, job: Any, timeout: float) -> Any:
    result = asyncio.wrap_future(job.future)
    done, _ = await asyncio.wait({result}, timeout=min(WATCH_AFTER_S, timeout))
    if result in done:
        return result.result()
    gone = asyncio.ensure_future(_wait_disconnect(request))
    try:
        done, _ = await asyncio.wait(
            {result, gone}, timeout=max(0.0, timeout - WATCH_AFTER_S), return_when=asyncio.FIRST_COMPLETED
        )
    finally:
        gone.cancel()
    if result in done:
        return result.result()
    scheduler.cancel(job)
    if gone in done:
        log.info(
            "client left before its answer was ready; %s", "dropped from the queue" if not job.started else "discarded"
        )
        raise _ClientGone()
    raise RequestTimeout(f"the request took longer than REQUEST_TIMEOUT_S ({timeout:g} s)")


def _next_chunk(chunks: Any) -> bytes | None:
    return next(chunks, None)


class _StreamedResponse(StreamingResponse):
    """A body produced while it is sent (``Output.stream``), with chunked transfer encoding.

    A client that leaves closes the stream, which stops its producer (the decode) at its next chunk. A
    stream that fails after the status went out cannot change it: the connection is ended without the closing
    chunk, so the client sees a truncated body, and the log names the request id.
    """

    def __init__(self, stream: StreamedBody, headers: dict[str, str], request_id: str, metrics: Metrics) -> None:
        super().__init__(iter(()), headers=headers, media_type=stream.media_type)
        self.stream = stream
        self.request_id = request_id
        self.metrics = metrics

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        stream = self.stream
        chunks = iter(stream)
        sent = 0
        gone = asyncio.ensure_future(_receive_disconnect(receive))
        try:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            while True:
                step = asyncio.ensure_future(run_in_threadpool(_next_chunk, chunks))
                await asyncio.wait({step, gone}, return_when=asyncio.FIRST_COMPLETED)
                if not step.done():
                    stream.close()  # unblocks the pending read; the producer stops at its next chunk
                    await asyncio.wait({step})
                    log.info(
                        "request %s: the client left mid-stream after %d bytes; stream stopped", self.request_id, sent
                    )
                    return
                try:
                    chunk = step.result()
                except Exception:
                    log.error(
                        "request %s: the stream failed after %d bytes; the connection is closed without the "
                        "end of the body:\n%s",
                        self.request_id,
                        sent,
                        traceback.format_exc(),
                    )
                    return
                if chunk is None:
                    break
                await send({"type": "http.response.body", "body": bytes(chunk), "more_body": True})
                sent += len(chunk)
                self.metrics.bytes_out.inc(len(chunk))
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            gone.cancel()
            stream.close()


async def _receive_disconnect(receive: Any) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


def _check_auth(request: Request, settings: Settings) -> None:
    if not settings.api_token:
        return
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), settings.api_token.encode()):
        raise Unauthorized(
            "missing or wrong token: send `Authorization: Bearer <API_TOKEN>`", headers={"WWW-Authenticate": "Bearer"}
        )


def _error_response(exc: ServiceError) -> Response:
    headers = dict(exc.headers)
    if exc.retry_after is not None:
        headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after)))
    return _json_response(protocol.error_body(exc.message), exc.status_code, headers)


async def _http_exception(request: Request, exc: HTTPException) -> Response:
    headers = dict(exc.headers or {})
    if _body_unread(request):
        headers["Connection"] = "close"  # 404/405 answered without reading the body: see predict
    return _json_response(protocol.error_body(str(exc.detail)), exc.status_code, headers)
