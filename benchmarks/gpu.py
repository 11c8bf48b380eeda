"""The GPU benchmark: one short, prepared run for a lent H100/H200 (``python -m benchmarks.gpu``).

Sections (each guarded: one failure is recorded and the others still run):

1. ``memory``: the reference service's headline table, reproduced: peak GPU memory of a client that
   decodes locally (untiled and tiled) against one that decodes remotely, for SD v1 512² and 1024²,
   SDXL 1024², Flux 1024² and HunyuanVideo 61 frames at 480x832, as a share of the card.
2. ``server_decode``: server-side decode time at 512², 1024², 2048² next to docs/reference-figures.md.
3. ``throughput``: the CPU suite's throughput section on the GPU (SD v1 full size, 512², JPEG):
   our scheduler against one request at a time, concurrency 1/4/16.
4. ``remote_client``: a real remote decode from this process to a server child process, with this
   process's own peak GPU memory measured.

Writes into ``--out`` (default ``$OUT``, else ``benchmarks/results``): ``<machine>-<date>.md`` (tables),
``.png`` (chart), ``.jsonl`` (one line per measurement) and ``.json`` (everything). Budget: under 8
minutes on an H100 (most of it building full-size models and starting servers).

``--dry-run``: tiny configs and tiny shapes on the CPU, every section end to end in well under a
minute; its numbers mean nothing (and there is no GPU memory to read).
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import os
import re
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import torch

from .common import JsonLines, machine_info, make_repo, quiet_logs
from .gpu_memory import CASES, DRY_CASES, run_memory
from .gpu_report import write_gpu_chart, write_gpu_report
from .gpu_server import run_remote_client, run_server_decode
from .report import update_index
from .throughput import run_throughput

__all__ = ["main", "run_gpu", "machine_slug"]

DEFAULT_OUT = Path(__file__).resolve().parent / "results"


def machine_slug(info: dict[str, Any], dry_run: bool) -> str:
    """``h100``, ``h200``, ``a100``... from the GPU's name; ``dryrun-cpu`` without a GPU."""
    if dry_run or not info.get("gpu"):
        return "dryrun-cpu"
    name = info["gpu"]["name"].lower()
    match = re.search(r"\b([ahlbv]\d{2,3}|rtx\s*\d{4}|l4)\b", name)
    return re.sub(r"\s+", "", match.group(1)) if match else re.sub(r"[^a-z0-9]+", "-", name).strip("-")


def _guarded(results: dict[str, Any], jsonl: JsonLines, name: str, fn: Any) -> Any:
    def log(row: dict[str, Any]) -> None:
        record = {"section": name, **row}
        print(json.dumps(record, default=str), flush=True)
        jsonl.write(record)

    started = time.perf_counter()
    try:
        results["sections"][name] = fn(log)
    except Exception as exc:  # one failed section must not lose the others
        traceback.print_exc()
        results["sections"][name] = {"error": f"{type(exc).__name__}: {exc}"}
        log({"error": results["sections"][name]["error"]})
    results["seconds"][name] = round(time.perf_counter() - started, 1)
    return results["sections"][name]


def run_gpu(out_dir: Path, dry_run: bool = False) -> dict[str, Any]:
    from hf_remote_vae_toolkit.server.loader import load_handler
    from hf_remote_vae_toolkit.settings import Settings

    started = time.perf_counter()
    device = torch.device("cuda" if torch.cuda.is_available() and not dry_run else "cpu")
    size = "tiny" if dry_run else "full"
    info = machine_info()
    slug = machine_slug(info, dry_run)
    stem = f"{slug}-{dt.datetime.now(dt.timezone.utc):%Y-%m-%d}"
    out_dir.mkdir(parents=True, exist_ok=True)
    jsonl = JsonLines(out_dir / f"{stem}.jsonl")
    jsonl.write({"section": "machine", **info})
    results: dict[str, Any] = {"machine": info, "dry_run": dry_run, "sections": {}, "seconds": {}}
    sizes = [64, 128] if dry_run else [512, 1024, 2048]
    with tempfile.TemporaryDirectory(prefix="hf-vae-gpu-bench-") as tmp, quiet_logs():
        model_dir = Path(tmp) / "sd-v1"
        _guarded(results, jsonl, "memory", lambda log: run_memory(DRY_CASES if dry_run else CASES, size, device, log))

        def server_decode(log: Any) -> Any:
            make_repo("sd-v1-decode", model_dir, size=size)
            handler = load_handler(Settings(model_dir=str(model_dir)), model_dir)
            handler.warmup()
            try:
                return run_server_decode(handler, sizes, repeats=2 if dry_run else 5, log=log)
            finally:
                del handler
                gc.collect()
                if device.type == "cuda":
                    torch.cuda.empty_cache()

        _guarded(results, jsonl, "server_decode", server_decode)

        def throughput(log: Any) -> Any:
            if not (model_dir / "config.json").is_file():
                make_repo("sd-v1-decode", model_dir, size=size)
            return run_throughput(
                model_dir, 64 if dry_run else 512, [1, 4, 16], 16 if dry_run else 64, 1 if dry_run else 2, log
            )

        _guarded(results, jsonl, "throughput", throughput)
        _guarded(
            results,
            jsonl,
            "remote_client",
            lambda log: run_remote_client(model_dir, 64 if dry_run else 1024, device, log),
        )
    results["elapsed_s"] = round(time.perf_counter() - started, 1)
    results["title"] = f"GPU benchmark ({'DRY RUN, CPU, tiny models' if dry_run else slug}), {info['date']}"
    if write_gpu_chart(out_dir / f"{stem}.png", results):
        results["chart"] = f"{stem}.png"
    (out_dir / f"{stem}.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    write_gpu_report(out_dir / f"{stem}.md", results)
    if out_dir.resolve() == DEFAULT_OUT.resolve():
        update_index(out_dir)
    results["report"] = str(out_dir / f"{stem}.md")
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu", description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="tiny models on the CPU: proves the script runs")
    default_out = Path(os.environ["OUT"]) if os.environ.get("OUT") else DEFAULT_OUT
    parser.add_argument("--out", type=Path, default=default_out, help=f"output folder (default $OUT or {DEFAULT_OUT})")
    args = parser.parse_args(argv)
    if not args.dry_run and not torch.cuda.is_available():
        parser.error("no CUDA device: run on a GPU machine, or pass --dry-run to check the script on a CPU")
    results = run_gpu(args.out, dry_run=args.dry_run)
    print(f"report: {results['report']} ({results['elapsed_s']} s)")
    failed = [k for k, v in results["sections"].items() if isinstance(v, dict) and "error" in v]
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
