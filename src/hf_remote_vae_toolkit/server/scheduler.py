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

Workers cannot die of a request: whatever a handler raises (``SystemExit`` and ``KeyboardInterrupt``
included) fails that batch's requests and the worker goes on; a worker thread that ended anyway is
replaced by ``health()``. ``health()`` (``/health``) reports a problem while a batch has run longer than
``REQUEST_TIMEOUT_S`` (its requests were answered 504 and the worker cannot be interrupted: a stuck
worker, which the platform should restart) or no worker thread is alive. On a CPU, where there is no GPU
budget, a request whose memory estimate is larger than the host's memory is refused (413).
"""

from __future__ import annotations

import collections
import concurrent.futures
import logging
import math
import threading
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..contract import has_parse_step
from ..errors import HandlerError, NotReady, Overloaded, PayloadTooLarge, RequestTimeout
from .metrics import Metrics
from .workers import empty_cuda_cache, is_out_of_memory

__all__ = ["Job", "Scheduler"]

log = logging.getLogger("hf_remote_vae_toolkit")
GiB = 1024**3


@dataclass(eq=False)
class Job:
    """One admitted request. ``payload`` is what the handler runs on: the parsed job of a handler with a
    parse step, else the stock ``data`` dict. ``key`` and ``estimate`` were computed before admission."""

    payload: Any
    key: Hashable | None
    estimate: int
    deadline: float
    enqueued_at: float
    future: concurrent.futures.Future[Any] = field(default_factory=concurrent.futures.Future)
    started: bool = False


class Scheduler:
    """Runs handler calls on worker threads; ``submit`` is called from the event loop.

    ``clock`` (monotonic seconds) is injectable so tests can move time: deadlines and the batch delay read
    it; waiting on the condition variable still uses real time, bounded by the batch delay.
    """

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
        clock: Callable[[], float] = time.monotonic,
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
        self.clock = clock
        self._queue: collections.deque[Job] = collections.deque()
        self._cond = threading.Condition()
        self._threads: list[threading.Thread] = []
        self._stopping = False
        self._busy = 0
        self._arrivals_while_busy = 0
        self._running_sizes: dict[int, int] = {}  # worker index -> size of the batch it runs now
        self._batch_started: dict[int, float] = {}  # worker index -> when its current batch started
        #: on a CPU (no GPU budget): the host's memory, the bound on one request's estimate
        self.host_memory = host_memory_bytes() if memory_budget is None else None
        self._seconds_per_job = 0.05  # drain-rate estimate (EWMA), for Retry-After

    # ------------------------------------------------------------------ event-loop side

    @property
    def handler(self) -> Any:
        return self.handlers[0]

    @property
    def queued(self) -> int:
        return len(self._queue)

    def submit(self, payload: Any, *, key: Hashable | None = None, estimate: int = 0) -> Job:
        """Admit a request or refuse it at once (413 over the memory budget, 429 queue full, 503 stopping).

        ``key`` and ``estimate`` come from the handler's ``batch_key``/``estimate_memory``, computed by the
        caller off the event loop; a ``None`` key never batches.
        """
        if self.memory_budget is not None and estimate > self.memory_budget:
            self.metrics.rejected.labels("memory").inc()
            raise PayloadTooLarge(
                f"this request needs an estimated {estimate / GiB:.2f} GiB of GPU memory and the budget is "
                f"{self.memory_budget / GiB:.2f} GiB (GPU_MEMORY_BUDGET_GB); send a smaller batch or size"
            )
        if self.host_memory is not None and estimate > self.host_memory:
            self.metrics.rejected.labels("memory").inc()
            raise PayloadTooLarge(
                f"this request needs an estimated {estimate / GiB:.2f} GiB of memory and this machine has "
                f"{self.host_memory / GiB:.2f} GiB; send a smaller batch or size"
            )
        now = self.clock()
        job = Job(payload=payload, key=key, estimate=estimate, deadline=now + self.request_timeout_s, enqueued_at=now)
        with self._cond:
            if self._stopping:
                raise NotReady("the server is shutting down; retry on another replica", retry_after=1)
            # a full queue refuses only while every worker is busy: an idle worker takes the job at once
            idle = self._busy < len(self.handlers) and not self._queue
            if len(self._queue) >= self.max_queue_size and not idle:
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
        for index, handler in enumerate(self.handlers):
            self._threads.append(self._spawn(index, handler))

    def _spawn(self, index: int, handler: Any) -> threading.Thread:
        thread = threading.Thread(target=self._worker, args=(index, handler), name=f"vae-worker-{index}", daemon=True)
        thread.start()
        return thread

    def health(self) -> str | None:
        """``None`` when the workers can serve, else what is wrong (``/health`` answers 503 with it).

        A worker thread that ended (it cannot, short of a bug) is replaced here. A batch running past
        ``REQUEST_TIMEOUT_S`` is reported as a stuck worker until it returns."""
        with self._cond:
            if self._stopping:
                return "shutting down"
            for index, thread in enumerate(self._threads):
                if not thread.is_alive():
                    log.error("worker %d had stopped; starting a new one", index)
                    self._running_sizes.pop(index, None)
                    self._batch_started.pop(index, None)
                    self._threads[index] = self._spawn(index, self.handlers[index])
            now = time.monotonic()
            stuck = [i for i, t in self._batch_started.items() if now - t > self.request_timeout_s]
        if stuck:
            return (
                f"worker {stuck[0]} has been running one batch for more than REQUEST_TIMEOUT_S "
                f"({self.request_timeout_s:g} s)"
            )
        return None

    def stop(self, timeout: float = 30.0) -> None:
        """Finish running work, fail what is still queued with 503, join the workers."""
        with self._cond:
            self._stopping = True
            leftover = list(self._queue)
            self._queue.clear()
            self.metrics.queue_size.set(0)
            self._cond.notify_all()
        for job in leftover:
            _fail(job, NotReady("the server shut down before this request started; retry", retry_after=1))
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        running = sum(thread.is_alive() for thread in self._threads)
        log.info("Workers stopped: %d queued request(s) answered 503, %d worker(s) still busy", len(leftover), running)

    # ------------------------------------------------------------------ worker side

    def take_batch(self, block: bool = True) -> list[Job] | None:
        """The next batch (marked started), or None when stopping (or, with ``block=False``, when idle)."""
        with self._cond:
            while True:
                while not self._queue and not self._stopping:
                    if not block:
                        return None
                    self._cond.wait()
                if self._stopping:
                    return None
                first = self._queue.popleft()
                if self.clock() > first.deadline:
                    self.metrics.queue_size.set(len(self._queue))
                    _fail(first, RequestTimeout("the request waited in the queue past REQUEST_TIMEOUT_S"))
                    continue
                first.started = True
                batch = [first]
                if first.key is None or self.max_batch_size <= 1:
                    break
                # Wait for company only when requests have been arriving concurrently.
                concurrent_load = bool(self._queue) or self._arrivals_while_busy > 0
                wait_until = self.clock() + (self.max_batch_delay_s if concurrent_load else 0.0)
                while True:
                    self._gather(batch)
                    remaining = wait_until - self.clock()
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
        now = self.clock()
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

    def _worker(self, index: int, handler: Any) -> None:
        device = self.devices[index]
        if device is not None:
            import torch

            torch.cuda.set_device(device)
        while True:
            try:
                batch = self.take_batch()
            except BaseException:  # pragma: no cover - a bug in the scheduler itself; keep serving
                log.exception("worker %d: taking a batch failed", index)
                time.sleep(0.1)
                continue
            if batch is None:
                return
            self.run_batch(handler, batch, worker=index)

    def run_batch(self, handler: Any, batch: list[Job], *, worker: int = 0) -> None:
        """Run one batch to completion: every job's future ends with a result or an error. Never raises,
        whatever the handler raises (``SystemExit`` included), so a worker cannot die of a request."""
        self._batch_started[worker] = time.monotonic()
        try:
            self._run(handler, batch, worker=worker, allow_split=True)
        except BaseException as exc:  # pragma: no cover - _run already fails every job; belt and braces
            log.error("worker %d: unexpected %r", worker, exc)
            for job in batch:
                _fail(job, HandlerError("the handler failed; the server log has the details"))
        finally:
            with self._cond:
                self._busy -= 1
                self._set_running(worker, 0)
                self._batch_started.pop(worker, None)

    def _set_running(self, worker: int, size: int) -> None:
        self._running_sizes[worker] = size
        self.metrics.batch_current_size.set(sum(self._running_sizes.values()))

    def _call(self, handler: Any, batch: list[Job]) -> list[Any]:
        if has_parse_step(handler):
            outputs = list(handler.call_batch([job.payload for job in batch]))
        elif len(batch) == 1:
            outputs = [handler(batch[0].payload)]
        else:  # pragma: no cover - stock handlers get keys of None and never batch
            outputs = [handler(job.payload) for job in batch]
        if len(outputs) != len(batch):
            raise RuntimeError(f"call_batch returned {len(outputs)} outputs for {len(batch)} requests")
        return outputs

    def _run(self, handler: Any, batch: list[Job], *, worker: int, allow_split: bool) -> None:
        started = self.clock()
        for job in batch:
            self.metrics.queue_wait.observe(max(0.0, started - job.enqueued_at))
        with self._cond:
            self._set_running(worker, len(batch))
        self.metrics.batch_size.observe(len(batch))
        try:
            outputs = self._call(handler, batch)
        except BaseException as exc:
            if is_out_of_memory(exc):
                self.metrics.oom.inc()
                empty_cuda_cache()
                if allow_split and len(batch) > 1:
                    half = len(batch) // 2
                    log.warning(
                        "CUDA out of memory on a batch of %d; retrying as %d + %d", len(batch), half, len(batch) - half
                    )
                    self._run(handler, batch[:half], worker=worker, allow_split=False)
                    self._run(handler, batch[half:], worker=worker, allow_split=False)
                    return
                exc = NotReady(
                    "the GPU ran out of memory for this request; retry, or send a smaller one", retry_after=1
                )
            elif not isinstance(exc, Exception):
                # SystemExit, KeyboardInterrupt, GeneratorExit raised by handler code: the request fails, the
                # worker lives on
                log.error("the handler raised %r; the worker goes on", exc)
                exc = HandlerError(f"the handler raised {type(exc).__name__}")
            for job in batch:
                _fail(job, exc)
            return
        self.metrics.handler_time.observe(self.clock() - started)
        for job, output in zip(batch, outputs):
            if not job.future.done():
                job.future.set_result(output)
        if any(getattr(output, "stream", None) is not None for output in outputs):
            # a stream decodes while it is sent: it gets its own REQUEST_TIMEOUT_S before /health calls the
            # worker stuck, and its time counts in the drain estimate (Retry-After)
            self._batch_started[worker] = time.monotonic()
            self._produce_streams(batch, outputs)
        self._seconds_per_job = 0.8 * self._seconds_per_job + 0.2 * ((self.clock() - started) / len(batch))

    @staticmethod
    def _produce_streams(batch: list[Job], outputs: list[Any]) -> None:
        """Streamed results (``Output.stream``): their device work runs here, on this worker, after the
        response has started, so the worker counts busy until the last chunk is produced."""
        for job, output in zip(batch, outputs):
            stream = getattr(output, "stream", None)
            if stream is None:
                continue
            future = job.future
            if future.cancelled() or future.exception() is not None or future.result() is not output:
                stream.close()  # nobody will read it (the client left or timed out): stop at the first chunk
            try:
                stream.produce()
            except Exception:  # produce reports its own failures to the reader; belt and braces
                log.exception("a streamed result failed outside its own error handling")
                stream.close()


def host_memory_bytes() -> int | None:
    """This machine's memory (the cgroup's limit when lower), or None when it cannot be read."""
    total: int | None = None
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    total = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError):
        return None
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path, encoding="ascii") as f:
                raw = f.read().strip()
        except OSError:
            continue
        if raw.isdigit() and total is not None:
            total = min(total, int(raw))
    return total


def _fail(job: Job, exc: BaseException) -> None:
    if not job.future.done():
        job.future.set_exception(exc)
