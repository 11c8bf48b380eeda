"""The CPU suite's sections: how each is called, and how its table is titled and explained."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from .encoding import ANCHOR_DECODE_MS, run_encoding
from .overhead import run_overhead
from .throughput import run_throughput
from .wire import run_wire

__all__ = ["SECTIONS", "REPORT_SECTIONS", "preamble"]

Section = Callable[..., list[dict[str, Any]]]


def _overhead(plan: Any, *, handler: Any, url: str, log: Any, **_: Any) -> list[dict[str, Any]]:
    return run_overhead(handler, url, list(plan.overhead_repeats), plan.overhead_repeats, log)


def _throughput(plan: Any, *, model_dir: Path, server_env: dict[str, str], log: Any, **_: Any) -> list[dict[str, Any]]:
    return run_throughput(
        model_dir,
        plan.throughput_size,
        plan.concurrencies,
        plan.requests_per_run,
        plan.throughput_repeats,
        log,
        env=server_env,
    )


def _wire(plan: Any, *, url: str, log: Any, **_: Any) -> list[dict[str, Any]]:
    return run_wire(url, plan.wire_sizes, log)


def _encoding(plan: Any, *, handler: Any, log: Any, **_: Any) -> list[dict[str, Any]]:
    return run_encoding(handler, plan.encoding_sizes, plan.encoding_repeats, log)


SECTIONS: dict[str, Section] = {
    "overhead": _overhead,
    "throughput": _throughput,
    "wire": _wire,
    "encoding": _encoding,
}


def preamble(plan: Any) -> str:
    quick = (
        "**Quick run (smoke test): 64² outputs and one or two repeats; the numbers below mean nothing.**\n\n"
        if plan.name == "quick"
        else ""
    )
    return quick + (
        f"Model: `{plan.family_handler}` with the **{plan.vae_size}** random-weights config (SD v1's layout and "
        "8x factor, 8-16 channels instead of 128-512): the real decoder is far too slow for a CPU suite. The "
        "output shapes are real. On one CPU thread the tiny model still takes longer than the real decoder on "
        "an H100, so ratios against decode time here are smaller than a GPU server's: the added milliseconds "
        "are the portable figure, and the overhead table also projects them onto the H100 decode. "
        "Latents are sent as float16 (what a GPU client holds); the tiny model runs in float32 on the CPU. "
        "Times are medians; compared sides were measured alternately in this run. One torch thread in every "
        "process (`OMP_NUM_THREADS=1`): on a shared 2-core machine two threads made decode times swing 10x."
    )


REPORT_SECTIONS = [
    (
        "overhead",
        "1. Round-trip overhead: in-process handler call vs loopback HTTP",
        [
            ("size", "output px"),
            ("output", "output"),
            ("inproc_ms", "in-process ms"),
            ("http_ms", "HTTP ms"),
            ("server_handler_ms", "server handler ms"),
            ("encode_ms", "response encoding ms"),
            ("added_ms", "added ms"),
            ("ratio", "overhead ratio (this CPU)"),
            ("ratio_h100", "ratio on an H100 decode (projected)"),
            ("same_output", "same output"),
            ("repeats", "repeats"),
        ],
        "In-process: the handler's call plus the server's own response encoding (`encode_response`): the exact "
        "response body. HTTP: our `remote_decode` against `hf-remote-vae serve` (a child process loading the same "
        "weight files) on loopback: adds the request and response bodies, query parsing, the scheduler's "
        "hop to its worker, and the client's parsing (JPEG/PNG decode to a PIL image, tensor from bytes). "
        "The decode's own variation is far larger than what HTTP adds, so *added* is measured per request as "
        "the round trip minus the server's handler time for that request (from `/metrics`) minus the response "
        "encoding (the server encodes images outside the handler; the in-process encode time stands for it), "
        "and the overhead ratio is (in-process + added) / in-process; the raw medians are beside it. The tiny "
        "model on one CPU thread decodes slower than the real one on an H100 (docs/reference-figures.md: 22 ms at 512², 90 ms "
        "at 1024²), so the last ratio puts the same added milliseconds next to the H100 decode. Most of PNG's "
        "added time is the client decoding a multi-megabyte PNG; a raw tensor's is 12.6 MB (float32) crossing "
        "the loopback and being copied.",
    ),
    (
        "throughput",
        "2. Throughput: our scheduler vs the reference (one request at a time, no batching)",
        [
            ("concurrency", "concurrency"),
            ("size", "output px"),
            ("ours_rps", "ours req/s"),
            ("reference_rps", "reference req/s"),
            ("ratio", "ours / reference"),
            ("ours_mean_batch", "ours mean batch"),
            ("reference_mean_batch", "reference mean batch"),
            ("requests", "requests per run"),
            ("repeats", "runs"),
        ],
        "Two `hf-remote-vae serve` child processes on loopback, ours with batching on (`MAX_BATCH_SIZE=8`, the GPU default, "
        "`MAX_BATCH_DELAY_MS=5`) and the reference with `MAX_BATCH_SIZE=1`; JPEG output; the client is "
        "`decode_many` with that many threads. A fresh pair of servers per concurrency level, warmed up alike "
        "(a server's allocator remembers the batches it served: with one shared pair, ours ran single "
        "requests 26% faster for that reason alone). At concurrency 1 both servers do exactly the same (nothing to "
        "batch), so that row's ratio is this machine's noise floor. On a CPU one image already keeps the core "
        "busy and a batch of 512² images runs slower per image (its activations leave the caches), so batching "
        "can lose here; on a GPU a batch of 8 512² images runs at 1.7x the batch-1 rate (docs/reference-figures.md): see the "
        "GPU script.",
    ),
    (
        "wire",
        "3. Bytes on the wire per output type",
        [
            ("size", "output px"),
            ("output", "output"),
            ("latent_bytes", "request (fp16 latent) bytes"),
            ("response_bytes", "response bytes"),
            ("ratio", "response / latent"),
            ("response_dtype", "tensor dtype"),
        ],
        "Body sizes of a plain HTTP request. A raw tensor is in the model's dtype: float32 here, float16/bfloat16 "
        "on a GPU server (half these bytes). Random-weight outputs are noise-like, so the JPEG/PNG/WebP sizes "
        "are upper bounds for real images.",
    ),
    (
        "encoding",
        "4. Output encoding cost against decode time",
        [
            ("size", "px"),
            ("content", "image"),
            ("encoder", "encoder"),
            ("encode_ms", "encode ms"),
            ("bytes", "bytes"),
            ("cpu_decode_ms", "tiny decode ms (this CPU)"),
            ("vs_cpu_decode", "encode / tiny decode"),
            ("vs_h100_decode", "encode / H100 decode"),
        ],
        "One thread, this CPU. The H100 column divides by the full SD v1 fp16 decode of docs/reference-figures.md "
        f"({', '.join(f'{k}²: {v:g} ms' for k, v in ANCHOR_DECODE_MS.items())}): the cost a GPU server pays on "
        "its CPU after each decode.",
    ),
]
