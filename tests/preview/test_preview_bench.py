"""benchmarks/preview.py end to end with tiny configs: both decoders timed, memory read, the HTTP round
trip through the real server, and a report written (the numbers of a --quick run mean nothing)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from benchmarks.preview import run


@pytest.mark.slow  # two servers and four decoders: ~3 s on a quiet laptop, 10 s on a loaded 2-core box
def test_the_quick_preview_benchmark_writes_a_report(tmp_path: Path) -> None:
    result = run(device="cpu", sides=[64], repeats=1, quick=True, http=True, pairs=["taesd"], out=tmp_path, log=print)
    (row,) = result["decode"]
    assert row["full"] == "sd-v1" and row["preview"] == "taesd" and row["side"] == 64
    assert row["full_ms"] > 0 and row["preview_ms"] > 0
    (http,) = result["http"]
    assert http["full_ms"] > 0 and http["preview_ms"] > 0
    (md,) = tmp_path.glob("preview-cpu-quick-*.md")
    assert "| sd-v1 | taesd | 64x64 |" in md.read_text()
    assert json.loads(md.with_suffix(".json").read_text())["size"] == "tiny"
