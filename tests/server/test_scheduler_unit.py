"""The scheduler in isolation: no HTTP, no worker threads, a fake clock. Jobs are submitted, then the
test plays the worker (``take_batch`` / ``run_batch``), so batching, deadlines, cancellation, the
out-of-memory split and the drain are checked step by step, in milliseconds, without sleeps."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from hf_remote_vae_toolkit.errors import HandlerError, NotReady, Overloaded, PayloadTooLarge, RequestTimeout
from hf_remote_vae_toolkit.server.metrics import Metrics
from hf_remote_vae_toolkit.server.scheduler import Scheduler

GiB = 1024**3


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Doubler:
    """A handler with the parse step: jobs are numbers; records each call's jobs; optional failures."""

    def __init__(self, oom_above: int | None = None, raise_: BaseException | None = None) -> None:
        self.calls: list[list[float]] = []
        self.oom_above = oom_above
        self.raise_ = raise_

    def parse(self, data: Any, request: Any) -> Any:  # pragma: no cover - the tests submit jobs directly
        return data

    def call_batch(self, jobs: list[float]) -> list[float]:
        self.calls.append(list(jobs))
        if self.raise_ is not None:
            raise self.raise_
        if self.oom_above is not None and len(jobs) > self.oom_above:
            raise torch.OutOfMemoryError("CUDA out of memory (planted)")
        return [2 * j for j in jobs]


def make(handler: Any = None, **kwargs: Any) -> tuple[Scheduler, Clock, Any]:
    clock = Clock()
    handler = handler or Doubler()
    options = {"max_batch_size": 4, "max_batch_delay_ms": 0.0, "request_timeout_s": 10.0, **kwargs}
    return Scheduler([handler], Metrics(), clock=clock, **options), clock, handler


def step(scheduler: Scheduler) -> list[Any] | None:
    """Play the worker once: take the next batch (without blocking) and run it."""
    batch = scheduler.take_batch(block=False)
    if batch is not None:
        scheduler.run_batch(scheduler.handler, batch)
    return batch


def test_jobs_with_one_key_share_a_batch_up_to_the_bound_in_arrival_order() -> None:
    scheduler, _, handler = make(max_batch_size=2)
    jobs = [scheduler.submit(float(i), key="a") for i in range(3)]
    other = scheduler.submit(10.0, key="b")
    step(scheduler)
    step(scheduler)
    step(scheduler)
    assert handler.calls == [[0.0, 1.0], [2.0], [10.0]]
    assert [j.future.result() for j in jobs] == [0.0, 2.0, 4.0] and other.future.result() == 20.0
    assert step(scheduler) is None


def test_a_none_key_never_batches() -> None:
    scheduler, _, handler = make()
    for i in range(3):
        scheduler.submit(float(i), key=None)
    while step(scheduler):
        pass
    assert handler.calls == [[0.0], [1.0], [2.0]]


def test_a_job_past_its_deadline_is_dropped_with_504_and_never_runs() -> None:
    scheduler, clock, handler = make(request_timeout_s=5.0)
    late = scheduler.submit(1.0, key="a")
    clock.now += 5.1
    fresh = scheduler.submit(2.0, key="a")
    step(scheduler)
    with pytest.raises(RequestTimeout):
        late.future.result()
    assert fresh.future.result() == 4.0 and handler.calls == [[2.0]]


def test_a_cancelled_job_leaves_the_queue_and_a_started_one_cannot_be_cancelled() -> None:
    scheduler, _, handler = make(max_batch_size=1)
    first, second = scheduler.submit(1.0, key="a"), scheduler.submit(2.0, key="a")
    assert scheduler.cancel(second) and second.future.cancelled()
    batch = scheduler.take_batch(block=False)
    assert batch is not None and batch[0] is first
    assert not scheduler.cancel(first)  # already started: it runs to completion
    scheduler.run_batch(handler, batch)
    assert handler.calls == [[1.0]] and scheduler.queued == 0


def test_out_of_memory_splits_the_batch_once_then_answers_503() -> None:
    scheduler, _, handler = make(handler=Doubler(oom_above=2))
    jobs = [scheduler.submit(float(i), key="a") for i in range(4)]
    step(scheduler)
    assert handler.calls == [[0.0, 1.0, 2.0, 3.0], [0.0, 1.0], [2.0, 3.0]]
    assert [j.future.result() for j in jobs] == [0.0, 2.0, 4.0, 6.0]
    scheduler2, _, _ = make(handler=Doubler(oom_above=0))
    alone = scheduler2.submit(1.0, key="a")
    step(scheduler2)
    with pytest.raises(NotReady, match="out of memory"):
        alone.future.result()


def test_the_memory_budget_refuses_with_413_and_bounds_a_batch() -> None:
    scheduler, _, handler = make(memory_budget=3 * GiB)
    with pytest.raises(PayloadTooLarge, match="budget"):
        scheduler.submit(1.0, key="a", estimate=4 * GiB)
    for i in range(3):
        scheduler.submit(float(i), key="a", estimate=GiB + 1)
    step(scheduler)
    assert handler.calls == [[0.0, 1.0]]  # a third would pass 3 GiB


def test_a_full_queue_is_429_with_retry_after_but_an_idle_worker_always_takes_a_job() -> None:
    scheduler, _, _ = make(max_queue_size=0)
    job = scheduler.submit(1.0, key="a")  # queue of 0, yet the worker is idle
    with pytest.raises(Overloaded) as info:
        scheduler.submit(2.0, key="a")  # now one is waiting for the worker
    assert info.value.retry_after is not None and info.value.retry_after >= 1
    step(scheduler)
    assert job.future.result() == 2.0


def test_a_handler_raising_systemexit_fails_its_request_and_the_worker_goes_on() -> None:
    scheduler, _, handler = make(handler=Doubler(raise_=SystemExit(3)))
    job = scheduler.submit(1.0, key="a")
    step(scheduler)  # does not raise
    with pytest.raises(HandlerError, match="SystemExit"):
        job.future.result()
    handler.raise_ = None
    assert step(scheduler) is None and scheduler.submit(5.0, key="a") is not None
    step(scheduler)
    assert handler.calls[-1] == [5.0]


def test_stop_fails_queued_jobs_with_a_retryable_503() -> None:
    scheduler, _, _ = make()
    queued = [scheduler.submit(float(i), key=None) for i in range(3)]
    scheduler.stop(timeout=0.1)
    for job in queued:
        with pytest.raises(NotReady) as info:
            job.future.result()
        assert info.value.retry_after is not None
    with pytest.raises(NotReady):
        scheduler.submit(9.0, key=None)


def test_the_batch_delay_waits_for_company_only_under_concurrent_load() -> None:
    scheduler, _, handler = make(max_batch_delay_ms=50.0, max_batch_size=3)
    scheduler.submit(1.0, key="a")
    step(scheduler)  # nothing else queued, nobody busy: no wait (the fake clock never moves, so a wait would hang)
    for i in range(3):
        scheduler.submit(float(i), key="a")
    step(scheduler)  # others queued: it gathers them, and a full batch stops the wait at once
    assert handler.calls == [[1.0], [0.0, 1.0, 2.0]]


def test_batch_metrics_count_what_ran() -> None:
    scheduler, _, _ = make()
    for i in range(3):
        scheduler.submit(float(i), key="a")
    step(scheduler)
    text = scheduler.metrics.render().decode()
    assert "hf_vae_batch_size_count 1.0" in text and "hf_vae_batch_size_sum 3.0" in text
    assert "inf_batch_current_size 0.0" in text and "inf_queue_size 0.0" in text
