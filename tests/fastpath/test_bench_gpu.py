"""``make bench-gpu``'s dry run: every step of the GPU script at tiny size on the CPU, through make, writing a
well-formed report (no timing is asserted: the numbers of a dry run mean nothing)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from benchmarks.gpu_fast import TARGETS

ROOT = Path(__file__).resolve().parents[2]
SECTIONS = ("decode", "image_encoding", "end_to_end", "video", "throughput", "memory")


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_bench_gpu_dry_run_runs_every_section(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("OUT", "MAKEFLAGS", "VAE_COMPILE", "WARMUP_SHAPES")}
    proc = subprocess.run(
        ["make", "--no-print-directory", "bench-gpu", f"BENCH_PYTHON={sys.executable}",
         f"BENCH_GPU_ARGS=--dry-run --out {tmp_path}"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    (report_path,) = tmp_path.glob("gpu-fast-dryrun-cpu-*.md")
    report = report_path.read_text()
    assert "Dry run" in report and "did not run" not in report
    for what, *_ in [(t[1],) for t in TARGETS]:
        assert f"| {what} |" in report
    results = json.loads(next(tmp_path.glob("gpu-fast-dryrun-cpu-*.json")).read_text())
    sections = results["sections"]
    assert all(isinstance(sections[name], list) and sections[name] for name in SECTIONS), sections
    decode = sections["decode"]
    assert {r["family"] for r in decode} == {"sd-v1", "sdxl", "flux"} and {r["size"] for r in decode} == {16, 32}
    headline = [r for r in decode if r["size"] == 32]
    assert len(headline) == 3 and all(r["compiled_ms"] and r["handler_ran"] == "compiled" for r in headline)
    assert all(r["handler_ran"] == "eager" for r in decode if r["size"] == 16)  # not compiled: served eagerly
    assert {r["output"] for r in sections["end_to_end"]} == {"jpeg", "png", "uint8", "raw", "remote client peak"}
    assert {r["family"] for r in sections["video"]} == {"hunyuanvideo", "wan"}
    assert all(r["mp4_bytes"] > 0 for r in sections["video"])
    assert [r["concurrency"] for r in sections["throughput"]] == [16]
    assert all(t["value"] is not None for t in results["targets"])  # every target got a (meaningless) value
    lines = [json.loads(line) for line in next(tmp_path.glob("gpu-fast-dryrun-cpu-*.jsonl")).read_text().splitlines()]
    assert {line["section"] for line in lines} == {"machine", *SECTIONS}
