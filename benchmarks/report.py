"""The CPU suite's report: a Markdown file of tables and a matplotlib chart, from the results dict.

Everything here only formats: the numbers come from the sections, untouched.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["markdown_table", "write_report", "write_chart", "machine_lines", "update_index"]


def markdown_table(rows: list[dict[str, Any]], columns: list[tuple[str, str]]) -> str:
    """``columns``: (key, header) pairs. Missing values print as ``-``."""
    head = "| " + " | ".join(h for _, h in columns) + " |"
    rule = "|" + "|".join("---" for _ in columns) + "|"
    body = ["| " + " | ".join(_cell(row.get(k)) for k, _ in columns) + " |" for row in rows]
    return "\n".join([head, rule, *body])


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        return f"{value:,.3g}" if abs(value) < 100 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def machine_lines(info: dict[str, Any]) -> list[str]:
    v = info["versions"]
    gpu = info.get("gpu")
    return [
        f"- Date: {info['date']}",
        f"- Machine: {info['cpu']}, {info['cores']} cores (torch threads {info['torch_threads']}), {info['platform']}",
        f"- GPU: {gpu['name']} ({gpu['memory_bytes'] / 1024**3:.1f} GiB, CUDA {gpu['cuda']})" if gpu else "- GPU: none",
        f"- Versions: Python {info['python']}, torch {v['torch']}, diffusers {v['diffusers']}, Pillow {v['PIL']}, "
        f"uvicorn {v['uvicorn']}, starlette {v['starlette']}",
        f"- Load average (1/5/15 min) at start: {info['load_average']}",
    ]


def _section(title: str, result: Any, columns: list[tuple[str, str]], notes: str) -> list[str]:
    lines = [f"## {title}", "", notes, ""]
    if isinstance(result, dict) and "error" in result:
        lines += [f"**This section failed:** `{result['error']}`", ""]
    else:
        lines += [markdown_table(result, columns), ""]
    return lines


def write_report(
    path: Path, results: dict[str, Any], sections: list[tuple[str, str, list[tuple[str, str]], str]]
) -> None:
    """``sections``: (key in results["sections"], title, columns, notes) in report order."""
    lines = [f"# {results['title']}", ""]
    lines += machine_lines(results["machine"])
    lines += [f"- Load average at end: {results.get('load_after')}; suite wall time {results.get('elapsed_s')} s", ""]
    lines += [results.get("preamble", ""), ""]
    if results.get("headline"):
        lines += ["## Headline", "", *[f"- {h}" for h in results["headline"]], ""]
    if results.get("chart"):
        lines += [f"![chart]({results['chart']})", ""]
    for key, title, columns, notes in sections:
        lines += _section(title, results["sections"].get(key, {"error": "not run"}), columns, notes)
    path.write_text("\n".join(lines).rstrip() + "\n")


def _ok(result: Any) -> bool:
    return isinstance(result, list) and bool(result)


def write_chart(path: Path, results: dict[str, Any]) -> bool:
    """Four panels (overhead, throughput, bytes, encoding); False when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    s = results["sections"]
    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    fig.suptitle(results["title"], fontsize=11)
    _bars(
        axes[0][0],
        s.get("overhead"),
        lambda r: f"{r['output']}\n{r['size']}²",
        ("inproc_ms", "http_ms"),
        ("in-process", "loopback HTTP"),
        "ms per request",
        "1. Round-trip overhead",
    )
    _bars(
        axes[0][1],
        s.get("throughput"),
        lambda r: f"c={r['concurrency']}",
        ("ours_rps", "reference_rps"),
        ("ours (batching)", "reference (one at a time)"),
        "requests / s",
        "2. Throughput",
    )
    _bars(
        axes[1][0],
        s.get("wire"),
        lambda r: f"{r['output']}\n{r['size']}²",
        ("latent_bytes", "response_bytes"),
        ("request (latent)", "response"),
        "bytes (log)",
        "3. Bytes on the wire",
        log=True,
    )
    enc = [r for r in s.get("encoding") or [] if isinstance(r, dict) and r.get("content", "").startswith("decoded")]
    _bars(
        axes[1][1],
        enc or None,
        lambda r: " ".join(r["encoder"].split()[:2]) + f"\n{r['size']}²",
        ("encode_ms", "cpu_decode_ms"),
        ("encode", "decode (this CPU)"),
        "ms",
        "4. Encode vs decode (decoded image)",
        log=True,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


def _bars(ax: Any, rows: Any, label: Any, keys: tuple[str, str], names: tuple[str, str], ylabel: str, title: str,
          log: bool = False) -> None:  # fmt: skip
    ax.set_title(title, fontsize=10)
    if not _ok(rows):
        ax.text(0.5, 0.5, "section failed or not run", ha="center", va="center", transform=ax.transAxes)
        return
    xs = range(len(rows))
    width = 0.4
    for i, (key, name) in enumerate(zip(keys, names)):
        ax.bar([x + (i - 0.5) * width for x in xs], [r[key] for r in rows], width, label=name)
    ax.set_xticks(list(xs))
    ax.set_xticklabels([label(r) for r in rows], fontsize=7)
    ax.set_ylabel(ylabel)
    if log:
        ax.set_yscale("log")
    ax.legend(fontsize=8)


def update_index(results_dir: Path) -> Path:
    """``results/README.md``: every report in the folder, newest first (the file names sort by date)."""
    reports = [p for p in results_dir.glob("*.md") if p.name != "README.md"]
    by_date = sorted(reports, key=lambda p: (p.stem[-10:], p.stem), reverse=True)
    lines = [
        "# Benchmark reports",
        "",
        "Written by `make bench` (CPU), `make bench-gpu` (a lent GPU), `make stress`, `make bench-stock`,",
        "`make bench-preview`, `make bench-ray` and `make bench-video-stream`; newest first.",
        "",
    ]
    lines += [f"- [{p.stem}]({p.name})" for p in by_date]
    index = results_dir / "README.md"
    index.write_text("\n".join(lines) + "\n")
    return index
