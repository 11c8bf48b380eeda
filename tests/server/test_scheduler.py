"""The scheduler through the real server: queue bounds, timeouts, batching, memory admission,
client disconnects, OOM recovery, warm-up and graceful shutdown."""

from __future__ import annotations

import concurrent.futures
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import requests
import torch
from prometheus_client.parser import text_string_to_metric_families

from hf_remote_vae_toolkit import protocol
from hf_remote_vae_toolkit.contract import RequestInfo
from hf_remote_vae_toolkit.testing import running_server, serving_process

TOY = Path(__file__).parent / "toy_handlers"
GiB = 1024**3


class BatchingHandler:
    """Doubles a tensor; records every call so tests can see how requests were grouped."""

    def __init__(self, delay: float = 0.2, oom_above: int | None = None) -> None:
        self.delay = delay
        self.oom_above = oom_above
        self.calls: list[list[float]] = []  # the first value of each request, per call
        self.keys: list[set[Any]] = []
        self.warmed = False
        self.lock = threading.Lock()

    def warmup(self) -> None:
        self.warmed = True

    def parse(self, data: dict[str, Any], request: RequestInfo) -> dict[str, Any]:
        return {"inputs": data["inputs"], "parameters": dict(request.query)}

    def batch_key(self, data: dict[str, Any]) -> Any:
        return tuple(data["inputs"].shape)

    def estimate_memory(self, data: dict[str, Any]) -> int:
        return int(data["parameters"].get("gib", 0) * GiB)

    def call_batch(self, batch: list[dict[str, Any]]) -> list[torch.Tensor]:
        with self.lock:
            self.calls.append([float(d["inputs"].flatten()[0]) for d in batch])
            self.keys.append({self.batch_key(d) for d in batch})
        if self.oom_above is not None and len(batch) > self.oom_above:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        time.sleep(self.delay)
        stacked = torch.cat([d["inputs"] for d in batch]) * 2
        return list(stacked.split(1))


def post(url: str, value: float, shape: tuple[int, ...] = (1, 4), timeout: float = 30, **params: Any) -> Any:
    tensor = torch.full(shape, value)
    return requests.post(
        url,
        data=protocol.tensor_to_bytes(tensor),
        params={"shape": list(shape), "dtype": "float32", **params},
        headers={"Content-Type": "tensor/binary", "Accept": "tensor/binary"},
        timeout=timeout,
    )


def burst(url: str, values: list[float], shapes: list[tuple[int, ...]] | None = None, **params: Any) -> list[Any]:
    shapes = shapes or [(1, 4)] * len(values)
    with concurrent.futures.ThreadPoolExecutor(len(values)) as pool:
        futures = [pool.submit(post, url, v, s, **params) for v, s in zip(values, shapes)]
        return [f.result() for f in futures]


def test_burst_beyond_the_queue_gets_429_with_retry_after_and_the_rest_succeed() -> None:
    handler = BatchingHandler(delay=0.3)
    with running_server(handler=handler, max_queue_size=3, max_batch_size=1) as url:
        responses = burst(url, [float(i) for i in range(12)])
    statuses = [r.status_code for r in responses]
    assert 429 in statuses and 200 in statuses
    assert all(s in (200, 429) for s in statuses), statuses  # nothing answers 5xx
    for i, r in enumerate(responses):
        if r.status_code == 429:
            assert int(r.headers["Retry-After"]) >= 1
            assert "queue is full" in r.json()["error"]
        else:
            out = protocol.tensor_from_response(r.content, r.headers)
            assert torch.equal(out, torch.full((1, 4), 2.0 * i))


def test_a_handler_slower_than_the_request_timeout_gives_504_json() -> None:
    with running_server(TOY / "sleepy", request_timeout_s=0.5) as url:
        started = time.perf_counter()
        r = requests.post(url, json={"inputs": 1, "parameters": {"sleep": 3}}, timeout=30)
        assert r.status_code == 504
        assert "REQUEST_TIMEOUT_S" in r.json()["error"]
        assert time.perf_counter() - started < 2.5


def test_a_job_not_started_by_its_deadline_is_dropped() -> None:
    handler = BatchingHandler(delay=1.0)
    with running_server(handler=handler, request_timeout_s=0.6, max_batch_size=1) as url:
        first, second = burst(url, [1.0, 2.0])
        time.sleep(1.2)  # let the worker reach the expired job
    # the running one and the queued one both pass the deadline: 504 each
    assert (first.status_code, second.status_code) == (504, 504)
    assert "REQUEST_TIMEOUT_S" in second.json()["error"]
    ran = [v for call in handler.calls for v in call]
    assert ran == [1.0] or ran == [2.0], ran  # only one of them ever started


def test_compatible_requests_share_batches_and_get_their_own_outputs() -> None:
    handler = BatchingHandler(delay=0.3)
    with running_server(handler=handler, max_batch_size=8, max_batch_delay_ms=50) as url:
        values = [float(i) for i in range(8)]
        responses = burst(url, values)
    for value, r in zip(values, responses):
        assert r.status_code == 200, r.text
        assert torch.equal(protocol.tensor_from_response(r.content, r.headers), torch.full((1, 4), 2 * value))
    sizes = [len(c) for c in handler.calls]
    assert sum(sizes) == 8 and max(sizes) > 1, sizes


def test_on_a_cpu_batching_is_off_unless_asked_for() -> None:
    # MAX_BATCH_SIZE unset: 8 on GPUs, 1 on a CPU (where batched decodes measured slower per image)
    handler = BatchingHandler(delay=0.2)
    with running_server(handler=handler, max_batch_delay_ms=50) as url:
        responses = burst(url, [float(i) for i in range(4)])
    assert all(r.status_code == 200 for r in responses)
    assert [len(c) for c in handler.calls] == [1, 1, 1, 1]


def test_different_shapes_never_share_a_batch() -> None:
    handler = BatchingHandler(delay=0.2)
    shapes = [(1, 4), (1, 8)] * 4
    with running_server(handler=handler, max_batch_size=8, max_batch_delay_ms=50) as url:
        responses = burst(url, [float(i) for i in range(8)], shapes)
    assert all(r.status_code == 200 for r in responses)
    for value, shape, r in zip(range(8), shapes, responses):
        assert torch.equal(protocol.tensor_from_response(r.content, r.headers), torch.full(shape, 2.0 * value))
    assert all(len(keys) == 1 for keys in handler.keys), handler.keys


def test_batches_are_bounded_by_the_memory_budget() -> None:
    handler = BatchingHandler(delay=0.3)
    with running_server(handler=handler, max_batch_size=8, max_batch_delay_ms=50, gpu_memory_budget_gb=2.5) as url:
        responses = burst(url, [float(i) for i in range(6)], gib=1.0)
    assert all(r.status_code == 200 for r in responses)
    assert max(len(c) for c in handler.calls) <= 2  # 2 x 1 GiB fit in 2.5 GiB, 3 do not


def test_a_request_over_the_memory_budget_is_413_with_the_estimate() -> None:
    handler = BatchingHandler(delay=0.0)
    with running_server(handler=handler, gpu_memory_budget_gb=1.0) as url:
        r = post(url, 1.0, gib=3.0)
    assert r.status_code == 413
    message = r.json()["error"]
    assert "3.00 GiB" in message and "1.00 GiB" in message
    assert handler.calls == []


def test_out_of_memory_splits_the_batch_and_retries() -> None:
    # Batches of more than 3 run out of memory; a batch of up to 6 splits into halves that fit.
    handler = BatchingHandler(delay=0.3, oom_above=3)
    with running_server(handler=handler, max_batch_size=6, max_batch_delay_ms=50) as url:
        responses = burst(url, [float(i) for i in range(7)])
        metrics = requests.get(url + "/metrics").text
    for value, r in zip(range(7), responses):
        assert r.status_code == 200, r.text
        assert torch.equal(protocol.tensor_from_response(r.content, r.headers), torch.full((1, 4), 2.0 * value))
    assert any(len(c) > 3 for c in handler.calls), handler.calls  # an OOM happened and was recovered
    assert "hf_vae_oom_total 0.0" not in metrics


def test_out_of_memory_on_a_single_request_is_503() -> None:
    handler = BatchingHandler(delay=0.0, oom_above=0)
    with running_server(handler=handler) as url:
        r = post(url, 1.0)
        assert r.status_code == 503 and "out of memory" in r.json()["error"]
        assert requests.get(url + "/health").status_code == 200


def test_a_client_that_leaves_while_queued_does_not_run() -> None:
    handler = BatchingHandler(delay=1.0)
    with running_server(handler=handler, max_batch_size=1) as url, concurrent.futures.ThreadPoolExecutor(2) as pool:
        first = pool.submit(post, url, 1.0)
        time.sleep(0.2)  # the worker is busy with the first request
        with pytest.raises(requests.exceptions.ReadTimeout):
            post(url, 2.0, timeout=0.3)
        assert first.result().status_code == 200
        assert post(url, 3.0).status_code == 200
    ran = [v for call in handler.calls for v in call]
    assert ran == [1.0, 3.0], ran


def test_warmup_runs_before_the_port_opens() -> None:
    handler = BatchingHandler()
    with running_server(handler=handler) as url:
        assert handler.warmed
        assert requests.get(url + "/health").status_code == 200


def test_metrics_count_batches_queue_and_bytes() -> None:
    handler = BatchingHandler(delay=0.2)
    with running_server(handler=handler, max_batch_size=8, max_batch_delay_ms=50) as url:
        burst(url, [1.0, 2.0, 3.0, 4.0])
        text = requests.get(url + "/metrics").text
    values = {
        sample.name + str(sorted(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    calls = len(handler.calls)
    assert values["hf_vae_batch_size_count[]"] == calls and values["hf_vae_batch_size_sum[]"] == 4
    assert values["hf_vae_handler_seconds_count[]"] == calls
    assert values["hf_vae_queue_wait_seconds_count[]"] == 4
    assert values["hf_vae_request_bytes_total[]"] == 4 * 16  # four float32 [1, 4] bodies
    assert values["hf_vae_response_bytes_total[]"] == 4 * 16
    assert values["inf_queue_size[]"] == 0 and values["inf_batch_current_size[]"] == 0
    assert values["hf_vae_gpu_memory_allocated_bytes[]"] == 0  # no GPU here


def test_sigterm_lets_in_flight_requests_complete() -> None:
    with serving_process(TOY / "sleepy") as (url, proc), concurrent.futures.ThreadPoolExecutor(1) as pool:
        in_flight = pool.submit(requests.post, url, json={"inputs": 1, "parameters": {"sleep": 1.5}}, timeout=30)
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        r = in_flight.result()
        assert r.status_code == 200 and r.json()["slept"] == 1.5
        # uvicorn re-raises the captured SIGTERM after its graceful shutdown
        assert proc.wait(timeout=30) in (0, -signal.SIGTERM)
    log = Path(proc.log_path).read_text()
    assert "Shutting down" in log and "Finished server process" in log
