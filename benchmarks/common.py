"""What every benchmark section shares: timing, the machine's description, tiny model repos.

Timing rules (the machine is shared and noisy): warm up first, alternate the two sides of a
comparison inside each repeat so a burst of load hits both, and report medians. A ratio is always
taken from numbers measured in the same run.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import platform
import re
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "median_ms",
    "machine_info",
    "load_average",
    "make_repo",
    "JsonLines",
    "quiet_logs",
    "read_metrics",
]


def _time_once(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000.0


def median_ms(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> float:
    """Median wall time of ``fn`` in milliseconds, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    return statistics.median(_time_once(fn) for _ in range(repeats))


def load_average() -> list[float] | None:
    """1, 5 and 15 minute load averages (None where the OS has none)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:  # pragma: no cover - not on Linux/macOS
        return None


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _version(module: str) -> str | None:
    try:
        return str(__import__(module).__version__)
    except Exception:  # a missing or broken package is reported as absent
        return None


def machine_info() -> dict[str, Any]:
    """CPU, cores, torch threads, GPU (if any), library versions, date and load: the report's header."""
    import torch

    gpu = None
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        gpu = {"name": props.name, "memory_bytes": int(props.total_memory), "cuda": torch.version.cuda}
    return {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "host": platform.node(),
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": gpu,
        "python": sys.version.split()[0],
        "versions": {name: _version(name) for name in ("torch", "diffusers", "PIL", "numpy", "uvicorn", "starlette")},
        "load_average": load_average(),
    }


def make_repo(family_handler: str, out_dir: Path, size: str = "tiny") -> Path:
    """A model repo (handler + random weights of the family's ``size`` config) for the server to load."""
    from hf_remote_vae_toolkit.vae.repo import init_repo

    return init_repo(family_handler, out_dir, random_weights=size)


class JsonLines:
    """Append one JSON object per measurement to a file (the raw data behind every table)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("")

    def write(self, record: dict[str, Any]) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(record, default=str) + "\n")


@contextlib.contextmanager
def quiet_logs() -> Iterator[None]:
    """Silence the server's per-request logging while a benchmark runs (it would time the terminal)."""
    import logging

    logger = logging.getLogger("hf_remote_vae_toolkit")
    old = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(old)


def read_metrics(url: str, *names: str) -> list[float]:
    """Values of unlabelled samples (``hf_vae_handler_seconds_sum``...) from the server's ``/metrics``."""
    import requests

    text = requests.get(f"{url}/metrics", timeout=10).text
    values = []
    for name in names:
        match = re.search(rf"^{re.escape(name)}\s+(\S+)$", text, re.MULTILINE)
        values.append(float(match.group(1)) if match else float("nan"))
    return values
