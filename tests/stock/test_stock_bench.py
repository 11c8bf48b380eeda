"""benchmarks/stock_overhead.py: its load generator against a real server, and one short end-to-end run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from hf_remote_vae_toolkit.testing import running_server

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.stock_overhead import BODIES, Body, build_request, requests_per_second  # noqa: E402

ECHO = Path(__file__).parent / "handlers" / "echo"
STOCK_PYTHON = Path(os.environ.get("STOCK_VENV") or ROOT / ".venv-stock") / "bin" / "python"


def test_requests_are_well_formed_http() -> None:
    request = build_request(BODIES[1])
    head, _, body = request.partition(b"\r\n\r\n")
    assert head.startswith(b"POST / HTTP/1.1\r\n")
    assert b"Content-Length: 1048576" in head and b"Content-Type: audio/x-audio" in head
    assert len(body) == 1024 * 1024


def test_load_generator_counts_answers_and_refuses_errors() -> None:
    with running_server(ECHO) as url:
        port = urlsplit(url).port
        assert port is not None
        rate = requests_per_second(port, BODIES[0], concurrency=2, seconds=0.3, warmup=0)
        assert rate > 5
        with pytest.raises(RuntimeError, match="status 400"):
            requests_per_second(port, Body("bad", "application/json", b"{not json"), 1, seconds=0.2, warmup=0)


@pytest.mark.slow
@pytest.mark.skipif(not STOCK_PYTHON.is_file(), reason=f"{STOCK_PYTHON} missing: run `make stock-venv`")
def test_benchmark_runs_end_to_end(tmp_path: Path) -> None:
    args = ["--rounds", "1", "--seconds", "0.3", "--warmup", "0", "--out", str(tmp_path)]
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.stock_overhead", *args, "--stock-venv", str(STOCK_PYTHON.parents[1])],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (report,) = tmp_path.glob("stock-overhead-*.json")
    rows = json.loads(report.read_text())["rows"]
    assert [(r["body"], r["concurrency"]) for r in rows] == [
        ("json-small", 1),
        ("json-small", 8),
        ("binary-1MiB", 1),
        ("binary-1MiB", 8),
    ]
    for row in rows:
        assert row["stock_rps"] > 0 and row["ours_rps"] > 0
        assert row["ratio"] == pytest.approx(row["round_ratios"][0], rel=0.01)  # one round: its ratio
        assert row["ratio"] == pytest.approx(row["ours_rps"] / row["stock_rps"], rel=0.01)
        assert row["stock_cpu_us"] > 0 and row["ours_cpu_us"] > 0
    markdown = report.with_suffix(".md").read_text()
    assert "| json-small | 1 |" in markdown and "ratio" in markdown
