"""The CPU benchmark suite: ``python -m benchmarks.run`` (``make bench``); ``--quick`` for a smoke test.

Four sections, each measured side by side in this one run (see each module's docstring for what
exactly is compared):

1. ``overhead``: in-process handler call vs the same request over loopback HTTP, per output type.
2. ``throughput``: requests/s at concurrency 1, 4, 16, our scheduler vs the reference's one-at-a-time.
3. ``wire``: response bytes per output type against the latent's size.
4. ``encoding``: JPEG / PNG / WebP encode time against the decode time.

The VAE is SD v1's architecture with the *tiny* random-weights config (families.py): a CPU cannot run
the real decoder at full size in a 10-minute suite (the full SD v1 decoder takes ~15 s for one 256²
image on 2 cores). The output shapes are the real ones (512², 1024²) where time allows. A section
that fails records its error and the others still run.

Writes ``<out>/cpu-<date>.md``, ``.png`` (chart) and ``.json`` (every number), and refreshes
``<out>/README.md``, the index of reports.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .common import load_average, machine_info, make_repo, quiet_logs
from .headline import headline
from .report import update_index, write_chart, write_report
from .sections import SECTIONS

__all__ = ["Plan", "PLANS", "main", "run_suite"]

DEFAULT_OUT = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Plan:
    """Sizes and repeat counts of one run of the suite."""

    name: str
    overhead_repeats: dict[int, int]  # output size (pixels per side) -> timed pairs
    throughput_size: int
    concurrencies: list[int]
    requests_per_run: int
    throughput_repeats: int
    wire_sizes: list[int]
    encoding_sizes: list[int]
    encoding_repeats: int
    # One torch thread in this process and in every server: on a shared 2-core machine, two OpenMP
    # threads wait at barriers for a core someone else holds, and a decode's time swung 10x between
    # repeats (measured: 0.09 s to 1.5 s for the same call). One thread is slower but steady.
    torch_threads: int = 1
    family_handler: str = "sd-v1-decode"
    vae_size: str = "tiny"
    notes: list[str] = field(default_factory=list)


PLANS = {
    "full": Plan(
        name="full",
        overhead_repeats={512: 9, 1024: 5},
        throughput_size=512,
        concurrencies=[1, 4, 16],
        requests_per_run=32,
        throughput_repeats=4,
        wire_sizes=[512, 1024],
        encoding_sizes=[512, 1024],
        encoding_repeats=5,
    ),
    # Smoke test: every code path at 64² (an 8x8 latent), in seconds. Its numbers mean nothing.
    "quick": Plan(
        name="quick",
        overhead_repeats={64: 2},
        throughput_size=64,
        concurrencies=[1, 4, 16],
        requests_per_run=16,
        throughput_repeats=1,
        wire_sizes=[64],
        encoding_sizes=[64],
        encoding_repeats=2,
    ),
}


def _log(section: str) -> Callable[[dict[str, Any]], None]:
    def log(row: dict[str, Any]) -> None:
        print(json.dumps({"section": section, **row}, default=str), flush=True)

    return log


def run_suite(plan: Plan, out_dir: Path, only: list[str] | None = None) -> dict[str, Any]:
    """Run every section of ``plan`` (or ``only`` those), write the report into ``out_dir``; return the results."""
    import torch

    from hf_remote_vae_toolkit.server.loader import load_handler
    from hf_remote_vae_toolkit.settings import Settings
    from hf_remote_vae_toolkit.testing import serving_process

    started = time.perf_counter()
    torch.set_num_threads(plan.torch_threads)
    server_env = {"LOG_LEVEL": "warning", "OMP_NUM_THREADS": str(plan.torch_threads)}
    info = machine_info()
    results: dict[str, Any] = {"plan": asdict(plan), "machine": info, "sections": {}}
    with tempfile.TemporaryDirectory(prefix="hf-vae-bench-") as tmp, quiet_logs():
        model_dir = make_repo(plan.family_handler, Path(tmp) / "model", size=plan.vae_size)
        handler = load_handler(Settings(model_dir=str(model_dir)), model_dir)
        handler.warmup()
        # The server is its own process, as deployed, loading the same weight files as the in-process
        # handler (the overhead section checks the outputs are equal). Not ``running_server``: its
        # listening socket is made with proto 0, so asyncio leaves TCP_NODELAY off and every small
        # response stalls ~40 ms on Nagle + delayed ACK (measured; `hf-remote-vae serve` is not affected).
        with serving_process(model_dir, server_env, timeout=300) as (url, _proc):
            for name, section in SECTIONS.items():
                if only and name not in only:
                    continue
                try:
                    results["sections"][name] = section(
                        plan, handler=handler, url=url, model_dir=model_dir, server_env=server_env, log=_log(name)
                    )
                except Exception as exc:  # one failed section must not lose the others
                    traceback.print_exc()
                    results["sections"][name] = {"error": f"{type(exc).__name__}: {exc}"}
    results["elapsed_s"] = round(time.perf_counter() - started, 1)
    results["load_after"] = load_average()
    return _write(plan, out_dir, results)


def _write(plan: Plan, out_dir: Path, results: dict[str, Any]) -> dict[str, Any]:
    from .sections import REPORT_SECTIONS, preamble

    out_dir.mkdir(parents=True, exist_ok=True)
    date = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d")
    stem = f"cpu-{date}" if plan.name == "full" else f"cpu-{plan.name}-{date}"
    results["title"] = f"CPU benchmark ({plan.name} run), {results['machine']['date']}"
    results["preamble"] = preamble(plan)
    results["headline"] = headline(results["sections"])
    if write_chart(out_dir / f"{stem}.png", results):
        results["chart"] = f"{stem}.png"
    (out_dir / f"{stem}.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    write_report(out_dir / f"{stem}.md", results, REPORT_SECTIONS)
    update_index(out_dir)
    results["report"] = str(out_dir / f"{stem}.md")
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke test: tiny shapes, one repeat (seconds)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"report folder (default {DEFAULT_OUT})")
    parser.add_argument("--only", nargs="+", help="run only these sections: overhead throughput wire encoding")
    args = parser.parse_args(argv)
    # SIGTERM (a CI timeout, `kill`) unwinds like Ctrl-C, so the server child processes are stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    results = run_suite(PLANS["quick" if args.quick else "full"], args.out, args.only)
    print("\n".join(["", *results["headline"], "", f"report: {results['report']}"]))
    failed = [k for k, v in results["sections"].items() if isinstance(v, dict) and "error" in v]
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
