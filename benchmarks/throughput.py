"""Section 2: requests per second at concurrency 1, 4 and 16, our scheduler against the reference's.

The reference behaviour is the same server with ``MAX_BATCH_SIZE=1``: one request at a time, no
batching (docs/protocol.md). Both servers run as child processes (``hf-remote-vae serve``), so
the client threads here do not share a GIL with them. The client is our ``decode_many`` over one
pooled session.

Each concurrency level gets a fresh pair of servers, warmed up the same way (a few requests one at a
time), then measured alternately. Fresh, because a server's history changes its speed: after
serving batches, ours ran single requests 26% faster than the reference on this CPU, identical work
(glibc's malloc had raised its mmap threshold after the large batch tensors were freed, so later
allocations stopped page-faulting). With one shared pair, the concurrency-1 ratio measured that
history, not the scheduler.

The mean batch size each server ran is read from its ``/metrics`` (``hf_vae_batch_size``).
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import requests
import torch

from hf_remote_vae_toolkit.client import decode_many, new_session
from hf_remote_vae_toolkit.testing import serving_process

from .common import read_metrics
from .outputs import SD_SCALING

__all__ = ["run_throughput", "SIDES"]

#: Server settings of each side, as environment variables.
SIDES = {"ours": {"MAX_BATCH_SIZE": "8"}, "reference": {"MAX_BATCH_SIZE": "1"}}


def _batch_counts(url: str) -> list[float]:
    """[sum of batch sizes, handler calls] so far."""
    return read_metrics(url, "hf_vae_batch_size_sum", "hf_vae_batch_size_count")


@contextlib.contextmanager
def _servers(model_dir: Path, env: dict[str, str]) -> Iterator[dict[str, str]]:
    with contextlib.ExitStack() as stack:
        urls = {}
        for side, extra in SIDES.items():
            url, _proc = stack.enter_context(serving_process(model_dir, {**env, **extra}, timeout=300))
            urls[side] = url
        yield urls


def _one_run(url: str, session: requests.Session, latents: torch.Tensor, n: int, concurrency: int) -> dict[str, float]:
    before = _batch_counts(url)
    start = time.perf_counter()
    decode_many(
        url,
        [latents] * n,
        concurrency=concurrency,
        progress=False,
        session=session,
        scaling_factor=SD_SCALING,
        retries=2,  # an idle pooled connection closed by the server's keep-alive timeout is retried
        image_format="jpg",
    )
    seconds = time.perf_counter() - start
    after = _batch_counts(url)
    calls = after[1] - before[1]
    return {"rps": n / seconds, "mean_batch": (after[0] - before[0]) / calls if calls else float("nan")}


def run_throughput(
    model_dir: Path,
    size: int,
    concurrencies: list[int],
    requests_per_run: int,
    repeats: int,
    log: Any,
    env: dict[str, str] | None = None,
) -> list[dict[str, Any]]:
    """Rows of ``{concurrency, ours_rps, reference_rps, ratio, ours_mean_batch, ...}``."""
    latents = torch.randn(1, 4, size // 8, size // 8, generator=torch.Generator().manual_seed(1)).half()
    results: dict[tuple[str, int], list[dict[str, float]]] = {}
    for c in concurrencies:
        session = new_session(pool_size=c)
        with _servers(model_dir, {"LOG_LEVEL": "warning", **(env or {})}) as urls:
            for url in urls.values():  # the same warm-up for both: connections, first-call costs
                _one_run(url, session, latents, 3, 1)
            for r in range(repeats):
                for side in list(urls) if r % 2 == 0 else list(reversed(urls)):
                    results.setdefault((side, c), []).append(
                        _one_run(urls[side], session, latents, requests_per_run, c)
                    )
        session.close()
    rows = []
    for c in concurrencies:
        row: dict[str, Any] = {"concurrency": c, "size": size, "requests": requests_per_run, "repeats": repeats}
        for side in SIDES:
            runs = results[(side, c)]
            row[f"{side}_rps"] = round(statistics.median(x["rps"] for x in runs), 3)
            row[f"{side}_mean_batch"] = round(statistics.median(x["mean_batch"] for x in runs), 2)
        row["ratio"] = round(row["ours_rps"] / row["reference_rps"], 3)
        log(row)
        rows.append(row)
    return rows
