"""The benchmark scripts run end to end and write well-formed reports (no timing is asserted)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _run(args: list[str], out: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("OUT", None)
    proc = subprocess.run(
        [sys.executable, "-m", *args, "--out", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return proc


def _one(folder: Path, pattern: str) -> Path:
    found = sorted(folder.glob(pattern))
    assert len(found) == 1, f"expected one {pattern} in {folder}, found {found}"
    return found[0]


def _stems(folder: Path) -> list[str]:
    return [p.stem for p in sorted(folder.glob("*.md")) if p.name != "README.md"]


@pytest.mark.slow
def test_cpu_suite_quick_writes_a_full_report(tmp_path: Path) -> None:
    proc = _run(["benchmarks.run", "--quick"], tmp_path, timeout=240)
    report = _one(tmp_path, "cpu-quick-*.md").read_text()
    for title in ("Round-trip overhead", "Throughput", "Bytes on the wire", "encoding cost", "## Headline"):
        assert title in report
    assert "section failed" not in report
    assert "Quick run" in report and "torch " in report and "Load average" in report
    assert _one(tmp_path, "cpu-quick-*.png").read_bytes().startswith(PNG_SIGNATURE)
    results = json.loads(_one(tmp_path, "cpu-quick-*.json").read_text())
    sections = results["sections"]
    assert {r["output"] for r in sections["overhead"]} == {"jpeg", "png", "uint8 tensor", "raw tensor"}
    assert all(r["same_output"] for r in sections["overhead"])  # both paths did the same work
    assert [r["concurrency"] for r in sections["throughput"]] == [1, 4, 16]
    assert all(r["reference_mean_batch"] == 1 for r in sections["throughput"])  # the reference never batches
    wire = {r["output"]: r for r in sections["wire"]}
    assert wire["uint8 tensor"]["response_bytes"] == 64 * 64 * 3
    assert wire["raw tensor"]["response_bytes"] == 64 * 64 * 3 * 4  # float32 on the CPU
    assert wire["jpeg"]["latent_bytes"] == 4 * 8 * 8 * 2  # a float16 latent
    encoders = {r["encoder"] for r in sections["encoding"]}
    assert "jpeg q75" in encoders and any(name.startswith("png ours (") for name in encoders)
    assert "report:" in proc.stdout
    index = (tmp_path / "README.md").read_text().splitlines()
    assert [line for line in index if line.startswith("- [")] == [f"- [{name}]({name}.md)" for name in _stems(tmp_path)]


@pytest.mark.slow
def test_gpu_script_dry_run_on_cpu(tmp_path: Path) -> None:
    _run(["benchmarks.gpu", "--dry-run"], tmp_path, timeout=240)
    report = _one(tmp_path, "dryrun-cpu-*.md").read_text()
    assert "Dry run" in report
    assert "section failed" not in report
    for title in ("decoding locally vs remotely", "Server-side decode", "with and without batching", "remote client"):
        assert title in report
    lines = [json.loads(line) for line in _one(tmp_path, "dryrun-cpu-*.jsonl").read_text().splitlines()]
    by_section = {line["section"] for line in lines}
    assert by_section == {"machine", "memory", "server_decode", "throughput", "remote_client"}
    memory = [line for line in lines if line["section"] == "memory"]
    assert [m["case"].split(" (")[0] for m in memory] == [
        "SD v1 512²",
        "SD v1 1024²",
        "SDXL 1024²",
        "Flux 1024²",
        "HunyuanVideo 61x480x832",
    ]
    assert _one(tmp_path, "dryrun-cpu-*.png").read_bytes().startswith(PNG_SIGNATURE)


def test_gpu_script_refuses_to_run_without_a_gpu_unless_dry(tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.gpu", "--out", str(tmp_path)], cwd=ROOT, capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert "--dry-run" in proc.stderr
