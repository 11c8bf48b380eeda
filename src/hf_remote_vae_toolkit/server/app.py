"""The app factory: routes, the request path, and the one place errors become responses.

``create_app(settings, handler=None)`` builds a Starlette app whose lifespan loads the handler(s),
warms them up and starts the scheduler *before* uvicorn opens the port, so "port open" means
ready. Nothing happens at import time.

One request (``POST /`` or ``/predict``)::

    auth -> size limit -> Accept negotiated (406 before any work) -> body read (bounded)
    -> codecs.decode_request -> handler.validate (optional) -> scheduler.submit (429 / 413)
    -> wait for the result, the client leaving, or REQUEST_TIMEOUT_S (504)
    -> codecs.encode_response -> response with X-Request-Id
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import math
import time
import traceback
import uuid
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from .. import protocol
from ..errors import NotReady, PayloadTooLarge, RequestTimeout, ServiceError, Unauthorized
from ..settings import Settings
from . import codecs
from .loader import HandlerLoadError, ensure_model_dir, load_handler
from .metrics import Metrics
from .scheduler import Scheduler, default_memory_budget

__all__ = ["create_app"]

log = logging.getLogger("hf_remote_vae_toolkit")
GiB = 1024**3


class _ClientGone(Exception):
    """The client disconnected before its answer was ready."""


def _devices(settings: Settings) -> list[int | None]:
    try:
        import torch

        if torch.cuda.is_available():
            count = torch.cuda.device_count()
            return list(range(min(count, settings.workers or count)))
    except ImportError:  # pragma: no cover
        pass
    return [None] * (settings.workers or 1)


def _build_handlers(settings: Settings, devices: list[int | None]) -> list[Any]:
    model_dir = ensure_model_dir(settings)
    handlers = []
    for device in devices:
        if device is None:
            handlers.append(load_handler(settings, model_dir))
            continue
        import torch

        with torch.cuda.device(device):  # "cuda" inside the handler means this device
            handlers.append(load_handler(settings, model_dir))
    return handlers


def _warm_up(handlers: list[Any], devices: list[int | None]) -> None:
    for handler, device in zip(handlers, devices):
        if not hasattr(handler, "warmup"):
            continue
        started = time.perf_counter()
        if device is None:
            handler.warmup()
        else:
            import torch

            with torch.cuda.device(device):
                handler.warmup()
        log.info("Warm-up done in %.1f ms", (time.perf_counter() - started) * 1000)


#: Micro-batch bound when MAX_BATCH_SIZE is unset. A GPU decodes a batch of 8 512² images at 1.7x the
#: batch-1 rate (ANCHORS.md); a CPU is already saturated by one image, and batches there measured
#: 0.69x the throughput of one-at-a-time at concurrency 16 (benchmarks/results), so it does not batch.
DEFAULT_GPU_BATCH = 8


def _batch_size(settings: Settings, devices: list[int | None]) -> int:
    if settings.max_batch_size is not None:
        return settings.max_batch_size
    return DEFAULT_GPU_BATCH if any(d is not None for d in devices) else 1


def _memory_budget(settings: Settings, devices: list[int | None]) -> int | None:
    if settings.gpu_memory_budget_gb is not None:
        return int(settings.gpu_memory_budget_gb * GiB)
    budgets = [default_memory_budget(d) for d in devices]
    known = [b for b in budgets if b is not None]
    return min(known) if known else None


def create_app(settings: Settings, handler: Any = None) -> Starlette:
    """The server app. ``handler``: an already-built handler object (tests), else loaded from
    ``settings.model_dir`` in the lifespan."""
    metrics = Metrics()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        devices: list[int | None]
        if handler is not None:
            handlers, devices = [handler], [None]
        else:
            devices = _devices(settings)
            try:
                handlers = await run_in_threadpool(_build_handlers, settings, devices)
            except HandlerLoadError as exc:
                log.error("The handler failed to load: %s", exc)
                log.error("To fix: %s", exc.hint)
                raise
        await run_in_threadpool(_warm_up, handlers, devices)
        budget = _memory_budget(settings, devices)
        for h in handlers:
            if budget is not None and hasattr(h, "memory_budget_bytes"):
                h.memory_budget_bytes = budget
        scheduler = Scheduler(
            handlers,
            metrics,
            max_queue_size=settings.max_queue_size,
            request_timeout_s=settings.request_timeout_s,
            max_batch_size=_batch_size(settings, devices),
            max_batch_delay_ms=settings.max_batch_delay_ms,
            memory_budget=budget,
            devices=devices,
        )
        scheduler.start()
        app.state.handler = handlers[0]
        app.state.scheduler = scheduler
        app.state.ready = True
        if budget is not None:
            log.info("GPU memory budget: %.2f GiB per worker", budget / GiB)
        log.info("Ready: %d worker(s)", len(handlers))
        try:
            yield
        finally:
            app.state.ready = False
            await run_in_threadpool(scheduler.stop, settings.shutdown_grace_s)

    async def health(request: Request) -> Response:
        if not getattr(request.app.state, "ready", False):
            return JSONResponse(protocol.error_body("not ready"), status_code=503)
        return PlainTextResponse("Ok")

    async def metrics_route(request: Request) -> Response:
        return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    async def predict(request: Request) -> Response:
        started = time.perf_counter()
        request_id = request.headers.get(protocol.HEADER_REQUEST_ID) or uuid.uuid4().hex[:16]
        metrics.in_flight.inc()
        try:
            response = await _predict(request, request_id)
        except _ClientGone:
            response = Response(status_code=499)
        except ServiceError as exc:
            response = _error_response(exc)
        except Exception:
            log.error("request %s failed:\n%s", request_id, traceback.format_exc())
            response = _error_response(
                ServiceError(f"the handler failed; the server log has the traceback (request id {request_id})")
            )
        finally:
            metrics.in_flight.dec()
        response.headers[protocol.HEADER_REQUEST_ID] = request_id
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
        if not getattr(request.app.state, "ready", False):
            raise NotReady("the model is not loaded yet; retry shortly")
        _check_auth(request, settings)
        accept = codecs.negotiate(request.headers.get("accept"))
        body = await _read_body(request, settings.max_request_bytes)
        metrics.bytes_in.inc(len(body))
        query = protocol.parse_query(request.query_params.multi_items())
        scheduler: Scheduler = request.app.state.scheduler
        data = await run_in_threadpool(
            _prepare, scheduler.handler, request.headers.get("content-type"), body, query, accept
        )
        del body
        job = scheduler.submit(data)
        result = await _wait(request, scheduler, job, settings.request_timeout_s)
        raw_params = data.get("parameters")
        params: dict[str, Any] = raw_params if isinstance(raw_params, dict) else {}
        payload, content_type, headers = await run_in_threadpool(codecs.encode_response, result, accept, params)
        if headers.get(protocol.HEADER_TILED) == "1":
            metrics.tiled.inc()
        metrics.bytes_out.inc(len(payload))
        return Response(payload, media_type=content_type, headers=headers)

    app = Starlette(
        routes=[
            Route("/", health, methods=["GET"]),
            Route("/health", health, methods=["GET"]),
            Route("/", predict, methods=["POST"]),
            Route("/predict", predict, methods=["POST"]),
            Route("/metrics", metrics_route, methods=["GET"]),
        ],
        lifespan=lifespan,
        exception_handlers={HTTPException: _http_exception},  # type: ignore[dict-item]
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.ready = False
    return app


def _prepare(handler: Any, content_type: str | None, body: bytes, query: dict[str, Any], accept: str | None) -> dict:
    """Body -> handler data, then the handler's own checks; runs in a thread (CPU work)."""
    data = codecs.decode_request(content_type, body, query)
    data.setdefault("accept", accept)
    if hasattr(handler, "validate"):
        handler.validate(data)
    return data


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"body is {int(declared)} bytes; the limit is {limit} bytes (MAX_REQUEST_BYTES)")
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"body exceeds the limit of {limit} bytes (MAX_REQUEST_BYTES)")
            chunks.append(chunk)
    except ClientDisconnect:
        raise _ClientGone() from None
    return b"".join(chunks)


async def _wait_disconnect(request: Request) -> None:
    # After the body is read, the next ASGI message is the disconnect (or nothing, until the
    # response is sent and this task is cancelled).
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def _wait(request: Request, scheduler: Scheduler, job: Any, timeout: float) -> Any:
    result = asyncio.wrap_future(job.future)
    gone = asyncio.ensure_future(_wait_disconnect(request))
    try:
        done, _ = await asyncio.wait({result, gone}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
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
    return JSONResponse(protocol.error_body(exc.message), status_code=exc.status_code, headers=headers)


async def _http_exception(request: Request, exc: HTTPException) -> Response:
    return JSONResponse(protocol.error_body(str(exc.detail)), status_code=exc.status_code, headers=exc.headers)
