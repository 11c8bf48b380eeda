"""Prometheus metrics, one registry per app (so tests can build many apps in one process).

``inf_queue_size`` and ``inf_batch_current_size`` keep the names the Endpoints autoscaler reads.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["Metrics"]

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 32)


class Metrics:
    """Every metric the server exports. ``render()`` gives the Prometheus text format."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.queue_size = Gauge("inf_queue_size", "Requests waiting in the queue", registry=r)
        self.batch_current_size = Gauge("inf_batch_current_size", "Requests in the batch running now", registry=r)
        self.in_flight = Gauge("hf_vae_requests_in_flight", "Requests being handled (queued or running)", registry=r)
        self.requests = Counter("hf_vae_requests", "Requests answered, by status", ["method", "status"], registry=r)
        self.latency = Histogram(
            "hf_vae_request_duration_seconds",
            "Request time end to end",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_wait = Histogram(
            "hf_vae_queue_wait_seconds", "Time from admission to start of work", buckets=_LATENCY_BUCKETS, registry=r
        )
        self.handler_time = Histogram(
            "hf_vae_handler_seconds", "Time inside the handler per batch", buckets=_LATENCY_BUCKETS, registry=r
        )
        self.batch_size = Histogram(
            "hf_vae_batch_size", "Requests per handler call", buckets=_BATCH_BUCKETS, registry=r
        )
        self.bytes_in = Counter("hf_vae_request_bytes", "Request body bytes", registry=r)
        self.bytes_out = Counter("hf_vae_response_bytes", "Response body bytes", registry=r)
        self.tiled = Counter("hf_vae_tiled", "Requests decoded with tiling", registry=r)
        self.oom = Counter("hf_vae_oom", "CUDA out-of-memory errors caught", registry=r)
        self.rejected = Counter("hf_vae_rejected", "Requests refused before running, by reason", ["reason"], registry=r)
        self.gpu_memory = Gauge("hf_vae_gpu_memory_allocated_bytes", "GPU memory allocated by torch", registry=r)
        self.gpu_memory.set_function(_gpu_memory_allocated)

    def render(self) -> bytes:
        return generate_latest(self.registry)


def _gpu_memory_allocated() -> float:
    try:
        import torch

        if torch.cuda.is_available():
            return float(sum(torch.cuda.memory_allocated(i) for i in range(torch.cuda.device_count())))
    except Exception:  # pragma: no cover - a broken driver must not break /metrics
        pass
    return 0.0
