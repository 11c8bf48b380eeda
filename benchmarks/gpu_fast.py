"""``make bench-gpu``: the GPU fast path measured, in one prepared run (``python -m benchmarks.gpu_fast``).

Sections, most important first; each is guarded (a failure is recorded, the rest still run) and skipped when
the run's time budget (``--budget-s``, default 450 s: under 8 minutes on an H100/H200) would not hold it:

1. ``decode``: SD v1, Flux, SDXL at 1024², 512², 2048² (full-size configs, random weights): the bare
   ``vae.decode`` eager against compiled (``torch.compile``, the handler's per-shape dispatch), the compile
   time, the handler's own call (decode + uint8 postprocess + copy to the host) and the server-side peak
   GPU memory of that call. 1024² is compiled for every family; the other sizes while a fifth of the budget
   lasts (eager is always measured).
2. ``image_encoding``: JPEG on the GPU (nvJPEG through torchvision, when it imports) against JPEG, PNG and
   WebP on the CPU (Pillow, the server's settings), next to the compiled decode of the same size.
3. ``end_to_end``: a server child process (``hf-remote-vae serve``, defaults: compiled, the shape warmed before
   the port opens) against the same handler in this process (parse, call, the server's response encoding):
   JPEG, PNG, uint8 and raw tensor at 1024²; and this process's own peak GPU memory as a remote client.
4. ``video``: HunyuanVideo 61x480x832 and Wan 81x480x832: raw tensor decode vs MP4 end to end (in-process,
   the response bytes made as the server makes them).
5. ``throughput``: requests/s at concurrency 1/4/16, 512² JPEG, batching (``MAX_BATCH_SIZE=8``) against one at
   a time (``MAX_BATCH_SIZE=1``), both eager (a compiled graph serves one batch size; batches vary).
6. ``memory``: peak GPU memory of a client decoding locally (untiled, tiled) against remotely (``gpu_memory``).

Writes ``gpu-fast-<machine>-<date>.md``, ``.json`` and ``.jsonl`` (one line per measurement, as it goes) into
``--out`` (default ``$OUT``, else ``benchmarks/results``). The report states each target next to its value.

``--dry-run``: tiny models and tiny shapes on the CPU, every section end to end, compiles with dynamo's
``eager`` backend (tracing and dispatch without the C++ build that takes minutes on a CPU); proves the script,
its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import functools
import gc
import json
import os
import statistics
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from .common import JsonLines, machine_info, make_repo, quiet_logs
from .gpu import machine_slug

__all__ = ["main", "run", "TARGETS", "DEFAULT_BUDGET_S"]

DEFAULT_OUT = Path(__file__).resolve().parent / "results"
DEFAULT_BUDGET_S = 450.0
GiB = 1024**3

#: (key, what, target, moonshot, lower is better) for the report's target table.
TARGETS = [
    ("decode_1024_ms", "SD v1 / SDXL / Flux 1024² server decode, ms (worst of the three)", 35.0, 20.0, True),
    ("jpeg_http_ratio", "JPEG over HTTP / in-process, 1024²", 1.05, None, True),
    ("encode_vs_decode", "JPEG / PNG encode ÷ decode, 1024² (worst of the two)", 0.25, None, True),
    ("batching_c16", "batching ÷ one at a time, concurrency 16, 512²", 1.7, None, False),
    ("hunyuan_mp4_ratio", "HunyuanVideo 61x480p MP4 end to end ÷ raw decode", 1.15, None, True),
]


# ------------------------------------------------------------------------------------------------ helpers


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _median_ms(fn: Callable[[], Any], device: torch.device, repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append((time.perf_counter() - start) * 1000)
    return round(statistics.median(times), 2)


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _peak_reset(device: torch.device) -> None:
    _free(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _peak(device: torch.device) -> int | None:
    return int(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else None


def _gib(value: int | None) -> float | None:
    return None if value is None else round(value / GiB, 3)


@contextlib.contextmanager
def _env(**values: str) -> Iterator[None]:
    """Environment for handlers built in this process (``VaeConfig.from_env`` reads it at construction)."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _handler(repo: Path, **env: str) -> Any:
    from hf_remote_vae_toolkit.server.loader import load_handler
    from hf_remote_vae_toolkit.settings import Settings

    with _env(**env):
        return load_handler(Settings(model_dir=str(repo)), repo)


def _request(handler: Any, latents: torch.Tensor, params: dict[str, Any], accept: str | None) -> Any:
    """What the server does for one request, in this process: parse, call, encode the response body."""
    from hf_remote_vae_toolkit.contract import RequestInfo
    from hf_remote_vae_toolkit.server.codecs import encode_response

    job = handler.parse({"inputs": latents}, RequestInfo(accept=accept, query=params))
    result = handler.call_batch([job])[0]
    return encode_response(result, accept, stock=False)


class Plan:
    """Sizes and budgets of a full run or a dry run."""

    def __init__(self, dry_run: bool, budget_s: float) -> None:
        self.dry = dry_run
        self.size = "tiny" if dry_run else "full"
        self.device = torch.device("cuda" if torch.cuda.is_available() and not dry_run else "cpu")
        self.sizes = [32, 16] if dry_run else [1024, 512, 2048]
        self.headline = self.sizes[0]
        self.batch_size = self.sizes[1]
        self.repeats = 1 if dry_run else 10
        self.started = time.monotonic()
        # a dry run checks that every step works: no section may be skipped for time on a slow, shared CPU
        self.deadline = self.started + (max(budget_s, 3600.0) if dry_run else budget_s)
        self.compile_budget_s = 0.0 if dry_run else 0.2 * budget_s  # dry: the headline size only
        # a CPU would spend minutes in the C++ build: the dry run traces and dispatches, without inductor
        self.compiler: Any = functools.partial(torch.compile, backend="eager") if dry_run else None
        #: video latents: HunyuanVideo 61 frames, Wan 81 frames, 480x832 (tiny: 5 frames of 64x64)
        self.video = {"hunyuanvideo": (1, 16, 16, 60, 104), "wan": (1, 16, 21, 60, 104)}
        if dry_run:
            self.video = {"hunyuanvideo": (1, 16, 2, 8, 8), "wan": (1, 16, 2, 8, 8)}

    def left(self) -> float:
        return self.deadline - time.monotonic()


# ------------------------------------------------------------------------------------------------ sections


def run_decode(plan: Plan, tmp: Path, log: Callable[[dict[str, Any]], None]) -> list[dict[str, Any]]:
    """Eager vs compiled ``vae.decode`` per family and size, the handler's call, its peak memory."""
    import torch._dynamo

    from hf_remote_vae_toolkit.vae.fastpath import to_channels_last, to_contiguous
    from hf_remote_vae_toolkit.vae.loading import compile_vae

    config = torch._dynamo.config
    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(config, name):
            setattr(config, name, max(64, getattr(config, name)))
    device = plan.device
    compile_spent = 0.0
    rows = []
    for family in ("sd-v1", "flux", "sdxl"):
        if plan.left() < 30:
            log({"family": family, "skipped": "time budget"})
            continue
        repo = make_repo(f"{family}-decode", tmp / f"{family}-decode", size=plan.size)
        handler = _handler(repo, VAE_COMPILE="0", WARMUP_SHAPES="none")
        loaded = handler.loaded
        compile_vae(loaded, ("decoder",), compiler=plan.compiler)
        dispatch = loaded.compiled["decoder"]
        c = loaded.latent_channels
        for size in plan.sizes:
            z = torch.randn(1, c, size // 8, size // 8, generator=torch.Generator().manual_seed(size))
            z_dev = z.to(device, loaded.dtype)
            if loaded.tuned:
                z_dev = z_dev.contiguous(memory_format=torch.channels_last)

            def bare(z_dev: torch.Tensor = z_dev, vae: Any = loaded.vae) -> None:
                with torch.inference_mode():
                    vae.decode(z_dev)

            row: dict[str, Any] = {"family": family, "size": size, "dtype": str(loaded.dtype)[6:]}
            row["eager_ms"] = _median_ms(bare, device, plan.repeats)
            if loaded.tuned:  # the same eager decode with the default layout: what channels-last buys
                to_contiguous(loaded.vae)
                row["eager_nchw_ms"] = _median_ms(functools.partial(bare, z_dev.contiguous()), device, plan.repeats)
                to_channels_last(loaded.vae)
            # the headline size always (its target needs it), the others while the compile budget lasts
            if (size == plan.headline or compile_spent < plan.compile_budget_s) and plan.left() > 60:
                started = time.perf_counter()
                with dispatch.admitting():
                    bare()
                _sync(device)
                row["compile_s"] = round(time.perf_counter() - started, 1)
                compile_spent += row["compile_s"]
                row["compiled_ms"] = _median_ms(bare, device, plan.repeats)
                row["speedup"] = round(row["eager_ms"] / row["compiled_ms"], 2)
            else:
                row["compiled_ms"] = None
                row["note"] = "compile skipped: its share of the time budget is spent"
            # the handler's own call: decode (compiled when warmed) + uint8 postprocess + the copy to the host
            params = {"output_type": "pt", "partial_postprocess": True, "do_scaling": False}
            before = dict(dispatch.calls)
            _peak_reset(device)
            row["handler_uint8_ms"] = _median_ms(
                functools.partial(_request, handler, z, params, "tensor/binary"), device, plan.repeats
            )
            row["server_peak_gib"] = _gib(_peak(device))
            row["handler_ran"] = "compiled" if dispatch.calls["compiled"] > before["compiled"] else "eager"
            log(row)
            rows.append(row)
        handler = loaded = dispatch = None
        torch._dynamo.reset()
        _free(device)
    return rows


def run_image_encoding(plan: Plan, decode_rows: list[dict[str, Any]], log: Any) -> list[dict[str, Any]]:
    """GPU JPEG (when an encoder is found) vs the CPU encoders, on a smooth image of each size."""
    from hf_remote_vae_toolkit import media
    from hf_remote_vae_toolkit.vae.fastpath import device_jpeg_encoder

    from .encoding import _smooth_image

    device = plan.device
    gpu_jpeg = device_jpeg_encoder(device)
    decode_ms = {r["size"]: r.get("compiled_ms") or r["eager_ms"] for r in decode_rows if r["family"] == "sd-v1"}
    rows = []
    for size in plan.sizes:
        pixels = _smooth_image(size)
        pil = media.to_pil(pixels)
        row: dict[str, Any] = {"size": size, "decode_ms": decode_ms.get(size)}
        row["cpu_jpeg_ms"] = _median_ms(functools.partial(media.encode_jpeg, pil, quality=75), device, plan.repeats)
        row["cpu_png_ms"] = _median_ms(functools.partial(media.encode_png, pil), device, plan.repeats)
        with contextlib.suppress(OSError, KeyError):  # Pillow without WebP
            webp = functools.partial(media.encode_webp, pil, quality=75)
            row["cpu_webp_ms"] = _median_ms(webp, device, plan.repeats)
        if gpu_jpeg is not None:
            chw = torch.from_numpy(pixels).permute(2, 0, 1).contiguous().to(device)
            row["gpu_jpeg_ms"] = _median_ms(lambda chw=chw: gpu_jpeg([chw], 75), device, plan.repeats)
            row["gpu_jpeg_bytes"] = len(gpu_jpeg([chw], 75)[0])
        else:
            row["gpu_jpeg_ms"] = None
            row["note"] = "no device JPEG encoder (torchvision with CUDA did not import, or no GPU)"
        row["cpu_jpeg_bytes"] = len(media.encode_jpeg(pil, quality=75))
        jpeg = row["gpu_jpeg_ms"] if row["gpu_jpeg_ms"] is not None else row["cpu_jpeg_ms"]
        if row["decode_ms"]:
            row["jpeg_vs_decode"] = round(jpeg / row["decode_ms"], 4)
            row["png_vs_decode"] = round(row["cpu_png_ms"] / row["decode_ms"], 4)
        log(row)
        rows.append(row)
    return rows


OUTPUTS = {
    "jpeg": ({"output_type": "pil", "image_format": "jpg"}, "image/jpeg", {"image_format": "jpg"}),
    "png": ({"output_type": "pil", "image_format": "png"}, "image/png", {"image_format": "png"}),
    "uint8": (
        {"output_type": "pt", "partial_postprocess": True},
        "tensor/binary",
        {"output_type": "pt", "partial_postprocess": True, "return_type": "pt"},
    ),
    "raw": ({"output_type": "pt"}, "tensor/binary", {"output_type": "pt", "return_type": "pt"}),
}


def run_end_to_end(plan: Plan, tmp: Path, log: Any) -> list[dict[str, Any]]:
    """HTTP round trip to a server child process vs the same work in this process, per output type."""
    from hf_remote_vae_toolkit.client import new_session, remote_decode
    from hf_remote_vae_toolkit.testing import serving_process

    device = plan.device
    size = plan.headline
    shape = f"1x4x{size // 8}x{size // 8}"
    repo = tmp / "sd-v1-decode"
    if not (repo / "handler.py").is_file():
        make_repo("sd-v1-decode", repo, size=plan.size)
    env = {"WARMUP_SHAPES": shape}  # VAE_COMPILE auto: compiled on CUDA, as deployed
    handler = _handler(repo, **env)
    if plan.dry:  # the dry run's in-process handler compiles too, with the cheap backend
        from hf_remote_vae_toolkit.vae.loading import compile_vae

        compile_vae(handler.loaded, ("decoder",), compiler=plan.compiler)
    handler.warmup()
    z = torch.randn(1, 4, size // 8, size // 8, generator=torch.Generator().manual_seed(7)).half()
    rows = []
    with serving_process(repo, {**env, "LOG_LEVEL": "warning"}, timeout=600) as (url, _proc):
        session = new_session(pool_size=1)
        for name, (params, accept, client_kwargs) in OUTPUTS.items():
            query = {**params, "do_scaling": False}

            def local(query: dict[str, Any] = query, accept: str = accept) -> Any:
                return _request(handler, z, query, accept)

            def remote(kw: dict[str, Any] = client_kwargs) -> Any:
                return remote_decode(url, z, do_scaling=False, session=session, retries=2, **kw)

            local(), remote()  # warm: connections, first calls
            inproc, http = [], []
            for i in range(plan.repeats):
                for _side, fn, into in (("in", local, inproc), ("http", remote, http))[:: 1 if i % 2 else -1]:
                    start = time.perf_counter()
                    fn()
                    _sync(device)
                    into.append((time.perf_counter() - start) * 1000)
            row = {
                "size": size,
                "output": name,
                "inproc_ms": round(statistics.median(inproc), 2),
                "http_ms": round(statistics.median(http), 2),
            }
            row["ratio"] = round(row["http_ms"] / row["inproc_ms"], 3)
            row["added_ms"] = round(row["http_ms"] - row["inproc_ms"], 2)
            log(row)
            rows.append(row)
        # this process as a remote client: it holds only its latent on the GPU
        _peak_reset(device)
        base = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0
        z_dev = z.to(device)
        remote_decode(url, z_dev, do_scaling=False, session=session, output_type="pt", partial_postprocess=True,
                      return_type="pt")  # fmt: skip
        peak = _peak(device)
        client = {"size": size, "output": "remote client peak", "client_peak_mib": None}
        if peak is not None:
            client["client_peak_mib"] = round((peak - base) / 2**20, 3)
        log(client)
        rows.append(client)
        session.close()
    handler = None
    _free(device)
    return rows


def run_video(plan: Plan, tmp: Path, log: Any) -> list[dict[str, Any]]:
    """Raw tensor decode vs MP4 end to end (decode, frames to uint8, x264), in this process."""
    device = plan.device
    rows = []
    for family, shape in plan.video.items():
        if plan.left() < 60:
            log({"family": family, "skipped": "time budget"})
            continue
        repo = make_repo(f"{family}-decode", tmp / f"{family}-decode", size=plan.size)
        handler = _handler(repo)
        z = torch.randn(shape, generator=torch.Generator().manual_seed(3))
        raw_q = {"output_type": "pt", "do_scaling": False}
        mp4_q = {"output_type": "mp4", "do_scaling": False}
        repeats = 1
        extra: dict[str, Any] = {}
        _peak_reset(device)
        raw_ms = _median_ms(functools.partial(_request, handler, z, raw_q, "tensor/binary"), device, repeats)
        peak = _peak(device)
        if handler.loaded.tuned and plan.left() > 90:  # channels_last_3d vs the default layout
            from hf_remote_vae_toolkit.vae.fastpath import to_channels_last, to_contiguous

            to_contiguous(handler.loaded.vae)
            raw = functools.partial(_request, handler, z, raw_q, "tensor/binary")
            extra["raw_ncdhw_ms"] = _median_ms(raw, device, repeats, warmup=0)
            to_channels_last(handler.loaded.vae)
        mp4 = functools.partial(_request, handler, z, mp4_q, "text/plain")
        row = {
            "family": family,
            "latent": "x".join(map(str, shape)),
            "dtype": str(handler.loaded.dtype)[6:],
            "raw_ms": raw_ms,
            "server_peak_gib": _gib(peak),
            **extra,
        }
        try:
            row["mp4_ms"] = _median_ms(mp4, device, repeats, warmup=0)
            row["ratio"] = round(row["mp4_ms"] / raw_ms, 3)
            if plan.dry:
                row["mp4_bytes"] = len(mp4()[0])
        except Exception as exc:  # no H.264 encoder on this machine: the raw figure still stands
            row["note"] = f"MP4 failed: {type(exc).__name__}: {str(exc)[:160]}"
        log(row)
        rows.append(row)
        handler = None
        _free(device)
    return rows


def run_throughput_section(plan: Plan, tmp: Path, log: Any) -> list[dict[str, Any]]:
    from .throughput import run_throughput

    repo = tmp / "sd-v1-decode"
    if not (repo / "handler.py").is_file():
        make_repo("sd-v1-decode", repo, size=plan.size)
    size = plan.batch_size
    env = {"VAE_COMPILE": "0", "WARMUP_SHAPES": f"1x4x{size // 8}x{size // 8}"}
    if plan.dry:
        return run_throughput(repo, size, [16], 8, 1, log, env=env)
    return run_throughput(repo, size, [1, 4, 16], 64, 2, log, env=env)


def run_memory_section(plan: Plan, log: Any) -> list[dict[str, Any]]:
    from .gpu_memory import CASES, DRY_CASES, run_memory

    return run_memory(DRY_CASES if plan.dry else CASES, plan.size, plan.device, log)


# ------------------------------------------------------------------------------------------------ report


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target with its measured value (None when its section did not run)."""
    s = results["sections"]
    value: dict[str, float | None] = dict.fromkeys(t[0] for t in TARGETS)
    decode = s.get("decode") if isinstance(s.get("decode"), list) else []
    headline = results.get("headline_size")
    at = [r.get("compiled_ms") or r.get("eager_ms") for r in decode if r.get("size") == headline]
    value["decode_1024_ms"] = max(at) if at else None
    e2e = s.get("end_to_end") if isinstance(s.get("end_to_end"), list) else []
    jpeg = [r["ratio"] for r in e2e if r.get("output") == "jpeg"]
    value["jpeg_http_ratio"] = jpeg[0] if jpeg else None
    enc = s.get("image_encoding") if isinstance(s.get("image_encoding"), list) else []
    ratios = [
        max(r["jpeg_vs_decode"], r["png_vs_decode"]) for r in enc if r.get("size") == headline and "png_vs_decode" in r
    ]
    value["encode_vs_decode"] = ratios[0] if ratios else None
    tp = s.get("throughput") if isinstance(s.get("throughput"), list) else []
    c16 = [r["ratio"] for r in tp if r.get("concurrency") == 16]
    value["batching_c16"] = c16[0] if c16 else None
    video = s.get("video") if isinstance(s.get("video"), list) else []
    hy = [r["ratio"] for r in video if r.get("family") == "hunyuanvideo" and "ratio" in r]
    value["hunyuan_mp4_ratio"] = hy[0] if hy else None
    out = []
    for key, what, target, moonshot, lower in TARGETS:
        v = value[key]
        met = None if v is None else (v <= target if lower else v >= target)
        out.append({"target": what, "value": v, "goal": f"{'≤' if lower else '≥'} {target}", "met": met,
                    "moonshot": moonshot})  # fmt: skip
    return out


SECTION_COLUMNS: dict[str, tuple[str, list[str], str]] = {
    "decode": (
        "1. Decode: eager vs compiled (full-size configs, random weights)",
        [
            "family",
            "size",
            "dtype",
            "eager_ms",
            "compiled_ms",
            "speedup",
            "compile_s",
            "handler_uint8_ms",
            "handler_ran",
            "server_peak_gib",
            "note",
        ],
        "Bare `vae.decode` of one latent, medians after a warm-up, device synchronised (`eager_ms`: channels-last "
        "weights and input, as served on CUDA; `eager_nchw_ms`: the default layout); compiled = the handler's "
        "per-shape `torch.compile` dispatch (`dynamic=False`). `handler_uint8_ms`: parse + decode + uint8 "
        "postprocess + the copy to the host + the response encoding, in this process; `server_peak_gib`: its peak "
        "GPU memory (weights included).",
    ),
    "image_encoding": (
        "2. Image encoding: GPU JPEG vs the CPU encoders",
        [
            "size",
            "decode_ms",
            "gpu_jpeg_ms",
            "cpu_jpeg_ms",
            "cpu_png_ms",
            "cpu_webp_ms",
            "jpeg_vs_decode",
            "png_vs_decode",
            "gpu_jpeg_bytes",
            "cpu_jpeg_bytes",
            "note",
        ],
        "A smooth synthetic image (gradients and flat discs). GPU JPEG: nvJPEG through torchvision's `encode_jpeg` "
        "on a CUDA tensor (bytes back on the host included). CPU: the server's Pillow settings (JPEG q75, PNG level "
        "1). `decode_ms`: SD v1's compiled decode of that size from section 1.",
    ),
    "end_to_end": (
        "3. End to end over HTTP vs in-process (SD v1)",
        ["size", "output", "inproc_ms", "http_ms", "ratio", "added_ms", "client_peak_mib"],
        "In-process: the handler's parse + call + the server's response encoding in this process. HTTP: our "
        "`remote_decode` to `hf-remote-vae serve` (compiled, the shape warmed) on the same GPU, alternating sides. "
        "The last row: this process's own peak GPU memory as a remote client (its latent only).",
    ),
    "video": (
        "4. Video: raw decode vs MP4 end to end",
        [
            "family",
            "latent",
            "dtype",
            "raw_ms",
            "raw_ncdhw_ms",
            "mp4_ms",
            "ratio",
            "server_peak_gib",
            "mp4_bytes",
            "note",
        ],
        "One request each in this process after a raw warm-up: the tensor response vs the MP4 (frames to uint8, "
        "x264 on the CPU) as the server builds its body. `raw_ncdhw_ms`: the raw decode with the weights in the "
        "default layout instead of `channels_last_3d`.",
    ),
    "throughput": (
        "5. Throughput: batching vs one at a time (SD v1, JPEG)",
        ["concurrency", "size", "ours_rps", "reference_rps", "ratio", "ours_mean_batch", "requests", "repeats"],
        "Two server child processes per level, eager (`VAE_COMPILE=0`): `MAX_BATCH_SIZE=8` vs `MAX_BATCH_SIZE=1`.",
    ),
    "memory": (
        "6. Peak GPU memory of a client: decoding locally vs remotely",
        [
            "case",
            "dtype",
            "weights_gib",
            "local_gib",
            "local_pct",
            "tiled_gib",
            "tiled_pct",
            "remote_mib",
            "remote_pct",
            "local_ms",
            "tiled_ms",
        ],
        "`benchmarks/gpu_memory.py`: full-size VAEs built on the GPU, `max_memory_allocated` from a reset.",
    ),
}


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def write_report(path: Path, results: dict[str, Any]) -> None:
    from .report import machine_lines

    lines = [f"# {results['title']}", "", *machine_lines(results["machine"])]
    lines += [f"- Wall time {results.get('elapsed_s')} s (budget {results.get('budget_s')} s); per section: "
              f"{results.get('seconds')}", ""]  # fmt: skip
    if results.get("dry_run"):
        lines += ["**Dry run: tiny models on the CPU. It proves the script runs; the numbers mean nothing.**", ""]
    lines += ["## Targets", "", "| target | measured | goal | met | moonshot |", "|---|---|---|---|---|"]
    for t in results["targets"]:
        met = "n/a" if t["met"] is None else ("yes" if t["met"] else "**no**")
        lines.append(f"| {t['target']} | {_cell(t['value'])} | {t['goal']} | {met} | {_cell(t['moonshot'])} |")
    lines.append("")
    for key, (title, columns, notes) in SECTION_COLUMNS.items():
        result = results["sections"].get(key, {"error": "not run"})
        lines += [f"## {title}", "", notes, ""]
        if isinstance(result, dict):
            lines += [f"**This section did not run:** `{result.get('error') or result.get('skipped')}`", ""]
            continue
        if key == "memory":
            from .gpu_report import _memory_rows

            result = _memory_rows(result)
        used = [c for c in columns if any(c in r for r in result)]
        lines += ["| " + " | ".join(used) + " |", "|" + "---|" * len(used)]
        lines += ["| " + " | ".join(_cell(r.get(c)) for c in used) + " |" for r in result]
        lines.append("")
    path.write_text("\n".join(lines).rstrip() + "\n")


# ------------------------------------------------------------------------------------------------ the run


def run(out_dir: Path, dry_run: bool = False, budget_s: float = DEFAULT_BUDGET_S) -> dict[str, Any]:
    plan = Plan(dry_run, budget_s)
    info = machine_info()
    stem = f"gpu-fast-{machine_slug(info, dry_run)}-{dt.datetime.now(dt.timezone.utc):%Y-%m-%d}"
    out_dir.mkdir(parents=True, exist_ok=True)
    jsonl = JsonLines(out_dir / f"{stem}.jsonl")
    jsonl.write({"section": "machine", **info})
    results: dict[str, Any] = {"machine": info, "dry_run": dry_run, "budget_s": budget_s, "sections": {},
                               "seconds": {}, "headline_size": plan.headline}  # fmt: skip

    def guarded(name: str, need_s: float, fn: Callable[[Callable[[dict[str, Any]], None]], Any]) -> Any:
        def log(row: dict[str, Any]) -> None:
            record = {"section": name, **row}
            print(json.dumps(record, default=str), flush=True)
            jsonl.write(record)

        if plan.left() < need_s:
            results["sections"][name] = {"skipped": f"time budget: {plan.left():.0f} s left, needs ~{need_s:.0f} s"}
            log(results["sections"][name])
            return results["sections"][name]
        started = time.perf_counter()
        try:
            results["sections"][name] = fn(log)
        except Exception as exc:  # one failed section must not lose the others
            traceback.print_exc()
            results["sections"][name] = {"error": f"{type(exc).__name__}: {exc}"}
            log(results["sections"][name])
        results["seconds"][name] = round(time.perf_counter() - started, 1)
        _free(plan.device)
        return results["sections"][name]

    with tempfile.TemporaryDirectory(prefix="hf-vae-gpu-fast-") as tmp_name, quiet_logs():
        tmp = Path(tmp_name)
        decode = guarded("decode", 0, lambda log: run_decode(plan, tmp, log))
        rows = decode if isinstance(decode, list) else []
        guarded("image_encoding", 0, lambda log: run_image_encoding(plan, rows, log))
        guarded("end_to_end", 0 if dry_run else 90, lambda log: run_end_to_end(plan, tmp, log))
        guarded("video", 0 if dry_run else 60, lambda log: run_video(plan, tmp, log))
        guarded("throughput", 0 if dry_run else 100, lambda log: run_throughput_section(plan, tmp, log))
        guarded("memory", 0 if dry_run else 40, lambda log: run_memory_section(plan, log))
    results["targets"] = targets(results)
    results["elapsed_s"] = round(time.monotonic() - plan.started, 1)
    kind = "DRY RUN, CPU, tiny models" if dry_run else machine_slug(info, dry_run)
    results["title"] = f"GPU fast path ({kind}), {info['date']}"
    (out_dir / f"{stem}.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    write_report(out_dir / f"{stem}.md", results)
    if out_dir.resolve() == DEFAULT_OUT.resolve():
        from .report import update_index

        update_index(out_dir)
    results["report"] = str(out_dir / f"{stem}.md")
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_fast", description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="tiny models on the CPU: proves the script runs")
    default_out = Path(os.environ["OUT"]) if os.environ.get("OUT") else DEFAULT_OUT
    parser.add_argument("--out", type=Path, default=default_out, help=f"output folder (default $OUT or {DEFAULT_OUT})")
    parser.add_argument("--budget-s", type=float, default=DEFAULT_BUDGET_S, help="time budget of the whole run")
    args = parser.parse_args(argv)
    if not args.dry_run and not torch.cuda.is_available():
        parser.error("no CUDA device: run on a GPU machine, or pass --dry-run to check the script on a CPU")
    results = run(args.out, dry_run=args.dry_run, budget_s=args.budget_s)
    print(f"report: {results['report']} ({results['elapsed_s']} s)")
    failed = [k for k, v in results["sections"].items() if isinstance(v, dict) and "error" in v]
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
