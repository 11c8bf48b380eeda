"""Decode many latents concurrently: results in input order, a progress bar, failures per item.

Threads, not ``httpx.AsyncClient``, do the concurrent requests, also for the async twin: the work
is I/O-bound (the GPU is on the other side), ``requests`` releases the GIL while it waits, and
running ``remote_decode`` itself in each thread means one HTTP implementation, so retries,
timeouts, token handling and typed errors behave identically whichever entry point is used.
``adecode_many`` hands the same calls to a thread pool and awaits them, keeping the event loop free.

The latents may be a lazy iterable (a generator running the diffusion loop): it is consumed in the
calling thread while earlier items decode, which is the overlap the remote-VAE workflow is for.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
from collections.abc import AsyncIterable, Iterable
from typing import Any

import requests
from tqdm.auto import tqdm

from ._arrays import is_array
from ._decode import decode
from ._http import new_session

__all__ = ["decode_many", "adecode_many", "DecodeManyError"]


class DecodeManyError(Exception):
    """Some items failed. ``results`` holds every output in input order (``None`` where an item
    failed); ``errors`` maps each failed index to its exception (a ``ServiceError`` subclass for
    remote failures, ``ValueError``/``TypeError`` for bad arguments)."""

    def __init__(self, results: list[Any], errors: dict[int, BaseException]) -> None:
        first = min(errors)
        super().__init__(f"{len(errors)} of {len(results)} items failed; first (index {first}): {errors[first]}")
        self.results = results
        self.errors = errors


def _check_latents(latents: Any) -> None:
    if is_array(latents):
        # Iterating a batch tensor yields [C, h, w] slices, which would be read as packed latents.
        raise TypeError("latents must be an iterable of tensors; to decode a batch one by one pass list(t.split(1))")


def _finish(results: list[Any], errors: dict[int, BaseException], return_exceptions: bool) -> list[Any]:
    if return_exceptions:
        for index, exc in errors.items():
            results[index] = exc
        return results
    if errors:
        raise DecodeManyError(results, errors)
    return results


def _bar(latents: Any, progress: bool, desc: str) -> Any:
    total = len(latents) if hasattr(latents, "__len__") else None
    return tqdm(total=total, disable=not progress, desc=desc, unit="item")


def decode_many(
    endpoint: str,
    latents: Iterable[Any],
    *,
    concurrency: int = 4,
    progress: bool = True,
    return_exceptions: bool = False,
    session: requests.Session | None = None,
    desc: str = "decode",
    **decode_kwargs: Any,
) -> list[Any]:
    """Decode each tensor of ``latents`` with ``remote_decode(endpoint, tensor, **decode_kwargs)``.

    (Without diffusers' ``FutureWarning`` for ``do_scaling`` without factors: here that simply asks
    the server for the model's own scaling.) Tensors may be torch tensors or numpy arrays.

    Up to ``concurrency`` requests are in flight at once over one pooled session (yours if given).
    ``latents`` is consumed lazily; at most ``2 * concurrency`` items wait in memory at a time.
    Returns one result per item, in input order. When items fail, the others still run; then
    ``DecodeManyError`` (carrying ``results`` and per-index ``errors``) is raised, or with
    ``return_exceptions=True`` the exception takes the failed item's place in the returned list.
    """
    _check_latents(latents)
    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency}")
    http = session if session is not None else new_session(pool_size=concurrency)
    results: list[Any] = []
    errors: dict[int, BaseException] = {}
    pending: dict[cf.Future[Any], int] = {}

    def collect(done: Iterable[cf.Future[Any]]) -> None:
        for future in done:
            index = pending.pop(future)
            exc = future.exception()
            if exc is not None:
                errors[index] = exc
            else:
                results[index] = future.result()
            bar.update(1)

    bar = _bar(latents, progress, desc)
    pool = cf.ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="remote-vae")
    try:
        for index, tensor in enumerate(latents):
            results.append(None)
            pending[pool.submit(decode, endpoint, tensor, session=http, **decode_kwargs)] = index
            if len(pending) >= 2 * concurrency:
                done, _ = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
                collect(done)
        while pending:
            done, _ = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
            collect(done)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # on Ctrl-C: drop what has not started
        bar.close()
        if session is None:
            http.close()
    return _finish(results, errors, return_exceptions)


async def adecode_many(
    endpoint: str,
    latents: Iterable[Any] | AsyncIterable[Any],
    *,
    concurrency: int = 4,
    progress: bool = True,
    return_exceptions: bool = False,
    session: requests.Session | None = None,
    desc: str = "decode",
    **decode_kwargs: Any,
) -> list[Any]:
    """The async twin of ``decode_many``: same arguments and results; ``latents`` may also be an
    async iterable (for example an async generator producing latents as it denoises)."""
    _check_latents(latents)
    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency}")
    loop = asyncio.get_running_loop()
    http = session if session is not None else new_session(pool_size=concurrency)
    pool = cf.ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="remote-vae")
    gate = asyncio.Semaphore(2 * concurrency)  # bounds items held in memory, as decode_many does
    results: list[Any] = []
    errors: dict[int, BaseException] = {}
    bar = _bar(latents, progress, desc)

    async def one(index: int, tensor: Any) -> None:
        try:
            results[index] = await loop.run_in_executor(
                pool, lambda: decode(endpoint, tensor, session=http, **decode_kwargs)
            )
        except Exception as exc:  # reported per item, like decode_many
            errors[index] = exc
        finally:
            bar.update(1)
            gate.release()

    tasks: list[asyncio.Task[None]] = []

    async def start(tensor: Any) -> None:
        await gate.acquire()
        results.append(None)
        tasks.append(asyncio.ensure_future(one(len(results) - 1, tensor)))

    try:
        if isinstance(latents, AsyncIterable):
            async for tensor in latents:
                await start(tensor)
        else:
            for tensor in latents:
                await start(tensor)
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        pool.shutdown(wait=False, cancel_futures=True)
        bar.close()
        if session is None:
            http.close()
    return _finish(results, errors, return_exceptions)
