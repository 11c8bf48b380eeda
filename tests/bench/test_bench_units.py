"""Pieces of the benchmark code that need no run: formatting, naming, the index, the plans."""

from __future__ import annotations

from pathlib import Path

from benchmarks.gpu import machine_slug
from benchmarks.gpu_memory import CASES, DRY_CASES
from benchmarks.headline import headline
from benchmarks.report import markdown_table, update_index
from benchmarks.run import PLANS


def test_markdown_table_formats_and_marks_missing_values() -> None:
    table = markdown_table(
        [{"a": 1234, "b": 0.5, "c": True}, {"a": 2, "c": False}], [("a", "A"), ("b", "B"), ("c", "same")]
    )
    assert table.splitlines() == ["| A | B | same |", "|---|---|---|", "| 1,234 | 0.5 | yes |", "| 2 | - | NO |"]


def test_machine_slug_names_the_card() -> None:
    def info(name: str) -> dict:
        return {"gpu": {"name": name}}

    assert machine_slug(info("NVIDIA H100 80GB HBM3"), dry_run=False) == "h100"
    assert machine_slug(info("NVIDIA H200"), dry_run=False) == "h200"
    assert machine_slug(info("NVIDIA GeForce RTX 4090"), dry_run=False) == "rtx4090"
    assert machine_slug(info("NVIDIA H100"), dry_run=True) == "dryrun-cpu"
    assert machine_slug({"gpu": None}, dry_run=False) == "dryrun-cpu"


def test_index_lists_reports_newest_first(tmp_path: Path) -> None:
    for name in ("cpu-2026-01-02.md", "h100-2026-03-01.md", "cpu-2026-02-01.md"):
        (tmp_path / name).write_text("x")
    index = update_index(tmp_path).read_text()
    order = [line for line in index.splitlines() if line.startswith("- [")]
    assert order == [
        "- [h100-2026-03-01](h100-2026-03-01.md)",
        "- [cpu-2026-02-01](cpu-2026-02-01.md)",
        "- [cpu-2026-01-02](cpu-2026-01-02.md)",
    ]


def test_headline_survives_failed_sections() -> None:
    lines = headline({"overhead": {"error": "boom"}, "throughput": [{"concurrency": 1, "size": 256, "ratio": 1.5}]})
    assert lines == ["Throughput, ours / reference at 256²: c=1: 1.50x"]


def test_plans_and_cases_cover_what_the_issue_asks() -> None:
    full = PLANS["full"]
    assert full.concurrencies == [1, 4, 16]
    assert max(full.overhead_repeats) >= 1024  # a full-size output shape
    assert len(CASES) == len(DRY_CASES) == 5
    assert all(len(c.latent_shape) == len(d.latent_shape) for c, d in zip(CASES, DRY_CASES))


def test_each_output_type_runs_as_the_server_would_ask_for_it(tmp_path: Path) -> None:
    import importlib.util

    import torch
    from benchmarks.outputs import OUTPUT_TYPES

    from hf_remote_vae_toolkit.contract import Output
    from hf_remote_vae_toolkit.vae.repo import init_repo

    repo = init_repo("sd-v1-decode", tmp_path / "repo", random_weights="tiny", vendor=False)
    spec = importlib.util.spec_from_file_location("bench_handler", repo / "handler.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    handler = module.EndpointHandler(str(repo))
    z = torch.zeros(1, 4, 8, 8)
    kinds = {name: out.run(handler, z) for name, out in OUTPUT_TYPES.items()}
    for name, media_type in (("jpeg", "image/jpeg"), ("png", "image/png"), ("webp", "image/webp")):
        assert isinstance(kinds[name], Output) and kinds[name].media_type == media_type, name
    assert kinds["uint8 tensor"].dtype == torch.uint8 and kinds["uint8 tensor"].shape == (1, 64, 64, 3)
    assert kinds["raw tensor"].shape == (1, 3, 64, 64)
