"""The scheduler: a bounded queue, micro-batching, admission by estimated GPU memory.

One worker thread per device, each with its own handler instance, pulls from one shared queue:
an idle worker takes the oldest job, so work always goes to the least-loaded worker and no
request waits behind a busy device while another is free.

A worker that picks a job whose handler offers ``batch_key``/``call_batch`` gathers queued jobs
with the same key (up to ``MAX_BATCH_SIZE`` and the memory budget), waiting up to
``MAX_BATCH_DELAY_MS`` for more only when requests have been arriving concurrently (at
concurrency 1 the wait would be pure latency). Stock handlers run one request at a time.

Jobs are ``concurrent.futures.Future``-backed so the asyncio side can await them and the worker
threads can complete them without touching the event loop. Lifecycle of a job::

    queued --worker picks--> running --> done (result or error)
       |  \\--deadline passed at pick--> RequestTimeout (dropped, never runs)
       \\--client left / timed out--> removed from the queue (never runs)
"""

from __future__ import annotations

import collections
import concurrent.futures
import logging
import math
import threading
import time
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import NotReady, Overloaded, PayloadTooLarge, RequestTimeout
from .metrics import Metrics

__all__ = ["Job", "Scheduler", "is_out_of_memory", "default_memory_budget"]

log = logging.getLogger("hf_remote_vae_toolkit")
GiB = 1024**3


def is_out_of_memory(exc: BaseException) -> bool:
    """True for a CUDA out-of-memory error (by type, never by message)."""
    try:
        import torch
    except ImportError:  # pragma: no cover
        return False
    return isinstance(exc, torch.OutOfMemoryError)


def default_memory_budget(device_index: int | None, margin_fraction: float = 0.1) -> int | None:
    """Free GPU memory now (after weights and warm-up) minus a margin; ``None`` on CPU."""
    try:
        import torch
    except ImportError:  # pragma: no cover
        return None
    if device_index is None or not torch.cuda.is_available():
        return None
    free, total = torch.cuda.mem_get_info(device_index)
    return max(0, int(free - max(GiB, margin_fraction * total)))


@dataclass(eq=False)
class Job:
    data: dict[str, Any]
    key: Hashable | None
    estimate: int
    deadline: float
    enqueued_at: float = field(default_factory=time.monotonic)
    future: concurrent.futures.Future[Any] = field(default_factory=concurrent.futures.Future)
    started: bool = False


class Scheduler:
    """Runs handler calls on worker threads; ``submit`` is called from the event loop."""

    def __init__(
        self,
        handlers: Sequence[Any],
        metrics: Metrics,
        *,
        max_queue_size: int = 64,
        request_timeout_s: float = 300.0,
        max_batch_size: int = 8,
        max_batch_delay_ms: float = 5.0,
        memory_budget: int | None = None,
        devices: Sequence[int | None] | None = None,
    ) -> None:
        if not handlers:
            raise ValueError("the scheduler needs at least one handler")
        self.handlers = list(handlers)
        self.metrics = metrics
        self.max_queue_size = max_queue_size
        self.request_timeout_s = request_timeout_s
        self.max_batch_size = max_batch_size
        self.max_batch_delay_s = max_batch_delay_ms / 1000.0
        self.memory_budget = memory_budget
        self.devices = list(devices) if devices is not None else [None] * len(self.handlers)
        self._queue: collections.deque[Job] = collections.deque()
        self._cond = threading.Condition()
        self._threads: list[threading.Thread] = []
        self._stopping = False
        self._busy = 0
        self._arrivals_while_busy = 0
        self._seconds_per_job = 0.05  # drain-rate estimate (EWMA), for Retry-After

    # ------------------------------------------------------------------ event-loop side

    @property
    def handler(self) -> Any:
        return self.handlers[0]

    def submit(self, data: dict[str, Any]) -> Job:
        """Admit a request or refuse it at once (429 queue full, 413 over the memory budget)."""
        handler = self.handler
        estimate = int(handler.estimate_memory(data)) if hasattr(handler, "estimate_memory") else 0
        if self.memory_budget is not None and estimate > self.memory_budget:
            self.metrics.rejected.labels("memory").inc()
            raise PayloadTooLarge(
                f"this request needs an estimated {estimate / GiB:.2f} GiB of GPU memory and the budget is "
                f"{self.memory_budget / GiB:.2f} GiB (GPU_MEMORY_BUDGET_GB); send a smaller batch or size"
            )
        key = self._batch_key(handler, data)
        job = Job(data=data, key=key, estimate=estimate, deadline=time.monotonic() + self.request_timeout_s)
        with self._cond:
            if self._stopping:
                raise NotReady("the server is shutting down; retry on another replica")
            if len(self._queue) >= self.max_queue_size:
                self.metrics.rejected.labels("queue_full").inc()
                raise Overloaded(
                    f"the queue is full ({self.max_queue_size} requests waiting); retry later",
                    retry_after=self.retry_after(),
                )
            self._queue.append(job)
            if self._busy:
                self._arrivals_while_busy += 1
            self.metrics.queue_size.set(len(self._queue))
            self._cond.notify()
        return job

    def cancel(self, job: Job) -> bool:
        """Remove a job that has not started (its client left or timed out). True if removed."""
        with self._cond:
            if job.started:
                return False
            try:
                self._queue.remove(job)
            except ValueError:
                return False
            self.metrics.queue_size.set(len(self._queue))
        job.future.cancel()
        return True

    def retry_after(self) -> int:
        """Seconds until the current queue has likely drained, from the measured service time."""
        workers = max(1, len(self.handlers))
        return max(1, math.ceil(len(self._queue) * self._seconds_per_job / workers))

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        for index, (handler, device) in enumerate(zip(self.handlers, self.devices)):
            thread = threading.Thread(
                target=self._worker, args=(handler, device), name=f"vae-worker-{index}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 30.0) -> None:
        """Finish running work, fail what is still queued with 503, join the workers."""
        with self._cond:
            self._stopping = True
            leftover = list(self._queue)
            self._queue.clear()
            self.metrics.queue_size.set(0)
            self._cond.notify_all()
        for job in leftover:
            _fail(job, NotReady("the server shut down before this request started; retry"))
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    # ------------------------------------------------------------------ worker side

    @staticmethod
    def _batch_key(handler: Any, data: dict[str, Any]) -> Hashable | None:
        if not (hasattr(handler, "batch_key") and hasattr(handler, "call_batch")):
            return None
        return handler.batch_key(data)

    def _take_batch(self) -> list[Job] | None:
        """Block until there is work; return the next batch (or None when stopping)."""
        with self._cond:
            while True:
                while not self._queue and not self._stopping:
                    self._cond.wait()
                if self._stopping:
                    return None
                first = self._queue.popleft()
                if time.monotonic() > first.deadline:
                    self.metrics.queue_size.set(len(self._queue))
                    _fail(first, RequestTimeout("the request waited in the queue past REQUEST_TIMEOUT_S"))
                    continue
                first.started = True
                batch = [first]
                if first.key is None or self.max_batch_size <= 1:
                    break
                # Wait for company only when requests have been arriving concurrently.
                concurrent_load = bool(self._queue) or self._arrivals_while_busy > 0
                wait_until = time.monotonic() + (self.max_batch_delay_s if concurrent_load else 0.0)
                while True:
                    self._gather(batch)
                    remaining = wait_until - time.monotonic()
                    if len(batch) >= self.max_batch_size or remaining <= 0 or self._stopping:
                        break
                    self._cond.wait(remaining)
                break
            self._busy += 1
            self._arrivals_while_busy = 0
            self.metrics.queue_size.set(len(self._queue))
            return batch

    def _gather(self, batch: list[Job]) -> None:
        """Move queued jobs with the batch's key into it, in arrival order, within the limits."""
        key = batch[0].key
        used = sum(j.estimate for j in batch)
        now = time.monotonic()
        for job in list(self._queue):
            if len(batch) >= self.max_batch_size:
                return
            if job.key != key or now > job.deadline:
                continue
            if self.memory_budget is not None and used + job.estimate > self.memory_budget:
                return
            self._queue.remove(job)
            job.started = True
            batch.append(job)
            used += job.estimate

    def _worker(self, handler: Any, device: int | None) -> None:
        if device is not None:
            import torch

            torch.cuda.set_device(device)
        while True:
            batch = self._take_batch()
            if batch is None:
                return
            try:
                self._run(handler, batch, allow_split=True)
            finally:
                with self._cond:
                    self._busy -= 1

    def _run(self, handler: Any, batch: list[Job], *, allow_split: bool) -> None:
        started = time.monotonic()
        for job in batch:
            self.metrics.queue_wait.observe(started - job.enqueued_at)
        self.metrics.batch_current_size.set(len(batch))
        self.metrics.batch_size.observe(len(batch))
        try:
            if len(batch) == 1:
                outputs = [handler(batch[0].data)]
            else:
                outputs = list(handler.call_batch([job.data for job in batch]))
                if len(outputs) != len(batch):
                    raise RuntimeError(f"call_batch returned {len(outputs)} outputs for {len(batch)} requests")
        except BaseException as exc:
            self.metrics.batch_current_size.set(0)
            if is_out_of_memory(exc):
                self.metrics.oom.inc()
                _empty_cuda_cache()
                if allow_split and len(batch) > 1:
                    half = len(batch) // 2
                    log.warning(
                        "CUDA out of memory on a batch of %d; retrying as %d + %d", len(batch), half, len(batch) - half
                    )
                    self._run(handler, batch[:half], allow_split=False)
                    self._run(handler, batch[half:], allow_split=False)
                    return
                exc = NotReady("the GPU ran out of memory for this request; retry, or send a smaller one")
            for job in batch:
                _fail(job, exc)
            if not isinstance(exc, Exception):
                raise
            return
        elapsed = time.monotonic() - started
        self.metrics.handler_time.observe(elapsed)
        self.metrics.batch_current_size.set(0)
        self._seconds_per_job = 0.8 * self._seconds_per_job + 0.2 * (elapsed / len(batch))
        for job, output in zip(batch, outputs):
            if not job.future.done():
                job.future.set_result(output)


def _fail(job: Job, exc: BaseException) -> None:
    if not job.future.done():
        job.future.set_exception(exc)


def _empty_cuda_cache() -> None:
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # pragma: no cover
        pass
