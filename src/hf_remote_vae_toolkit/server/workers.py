"""The worker layer: which devices serve, one handler per device, warm-up, the memory budget, and the
device facts the scheduler needs (CUDA out-of-memory detection, the default batch size).

``prepare_workers(settings)`` runs once, in the app's lifespan, before the port opens::

    devices (one per visible GPU, or WORKERS CPU workers) -> a handler per device (loaded on that device)
    -> warmup() on each -> the GPU memory budget (GPU_MEMORY_BUDGET_GB, else free memory minus a margin)
    -> setup(WorkerInfo) on each handler that has it: the documented way a handler learns its budget
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..contract import WorkerInfo
from ..settings import Settings
from .loader import ensure_model_dir, load_handler

__all__ = [
    "Workers",
    "prepare_workers",
    "is_out_of_memory",
    "empty_cuda_cache",
    "default_memory_budget",
    "DEFAULT_GPU_BATCH",
]

log = logging.getLogger("hf_remote_vae_toolkit")
GiB = 1024**3

#: Micro-batch bound when MAX_BATCH_SIZE is unset: 8 on a GPU, where a batch of 8 512² SD decodes runs
#: at about 1.7x the batch-1 rate; 1 on a CPU, which one image already saturates (batches measured 0.69x
#: the throughput of one-at-a-time at concurrency 16 there: benchmarks/results/).
DEFAULT_GPU_BATCH = 8


def is_out_of_memory(exc: BaseException) -> bool:
    """True for a CUDA out-of-memory error (by type, never by message)."""
    try:
        import torch
    except ImportError:  # pragma: no cover
        return False
    return isinstance(exc, torch.OutOfMemoryError)


def empty_cuda_cache() -> None:
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # pragma: no cover
        pass


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


def _devices(settings: Settings) -> list[int | None]:
    try:
        import torch

        if torch.cuda.is_available():
            count = torch.cuda.device_count()
            return list(range(min(count, settings.workers or count)))
    except ImportError:  # pragma: no cover
        pass
    return [None] * (settings.workers or 1)


def _cuda_index(device: Any) -> int | None:
    """The CUDA index of a handler's ``device`` attribute (a torch.device or a string), or None."""
    text = str(device) if device is not None else ""
    if not text.startswith("cuda"):
        return None
    _, _, index = text.partition(":")
    return int(index) if index.isdigit() else 0


def _on_device(device: int | None, fn: Callable[[], Any]) -> Any:
    if device is None:
        return fn()
    import torch

    with torch.cuda.device(device):  # "cuda" inside the handler means this device
        return fn()


@dataclass
class Workers:
    """What the scheduler runs on: a handler per device, the memory budget and the batch bound."""

    handlers: list[Any]
    devices: list[int | None]
    memory_budget: int | None
    max_batch_size: int

    @property
    def handler(self) -> Any:
        """The handler that parses requests (any of them would do: parsing touches no device)."""
        return self.handlers[0]


def _memory_budget(settings: Settings, devices: list[int | None]) -> int | None:
    if settings.gpu_memory_budget_gb is not None:
        return int(settings.gpu_memory_budget_gb * GiB)
    known = [b for b in (default_memory_budget(d) for d in devices) if b is not None]
    return min(known) if known else None


def _batch_size(settings: Settings, devices: list[int | None]) -> int:
    if settings.max_batch_size is not None:
        return settings.max_batch_size
    return DEFAULT_GPU_BATCH if any(d is not None for d in devices) else 1


def prepare_workers(settings: Settings, handler: Any = None) -> Workers:
    """Load (or take) the handlers, warm them up, size the budget and hand each its ``WorkerInfo``.

    Blocking (loading weights, warm-up decodes): the app runs it in a thread. ``handler``: an already-built
    handler (tests, the stock container), served by one worker on the GPU its ``device`` names, if any.
    """
    devices: list[int | None]
    if handler is not None:
        handlers, devices = [handler], [_cuda_index(getattr(handler, "device", None))]
    else:
        devices = _devices(settings)
        model_dir = ensure_model_dir(settings)
        handlers = [_on_device(d, lambda: load_handler(settings, model_dir)) for d in devices]
    for h, device in zip(handlers, devices):
        if callable(getattr(h, "warmup", None)):
            started = time.perf_counter()
            _on_device(device, h.warmup)
            # before the port opens: the lifespan runs this before the server accepts a connection
            where = "cpu" if device is None else f"cuda:{device}"
            log.info(
                "Warm-up on %s done in %.1f ms, before the port opens", where, (time.perf_counter() - started) * 1000
            )
    budget = _memory_budget(settings, devices)
    batch = _batch_size(settings, devices)
    for h, device in zip(handlers, devices):
        if callable(getattr(h, "setup", None)):
            info = WorkerInfo(
                device="cpu" if device is None else f"cuda:{device}", memory_budget_bytes=budget, max_batch_size=batch
            )
            _on_device(device, functools.partial(h.setup, info))
    return Workers(handlers=handlers, devices=devices, memory_budget=budget, max_batch_size=batch)
