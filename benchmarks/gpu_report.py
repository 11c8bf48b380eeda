"""The GPU run's report: the memory table first (the reference service's headline), then the rest."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .report import machine_lines, markdown_table

__all__ = ["write_gpu_report", "write_gpu_chart", "GPU_SECTIONS"]

GiB = 1024**3


def _gib(value: Any) -> float | None:
    return round(value / GiB, 3) if isinstance(value, (int, float)) else None


def _pct(value: Any) -> str | None:
    return f"{value * 100:.2f}%" if isinstance(value, (int, float)) else None


def _memory_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for r in rows:
        out.append(
            {
                **r,
                "weights_gib": _gib(r.get("weights_bytes")),
                "local_gib": _gib(r.get("local_peak")),
                "local_pct": _pct(r.get("local_share")),
                "tiled_gib": _gib(r.get("tiled_peak")),
                "tiled_pct": _pct(r.get("tiled_share")),
                "remote_mib": round(r["remote_peak"] / 2**20, 3) if r.get("remote_peak") is not None else None,
                "remote_pct": _pct(r.get("remote_share")),
                "latent": "x".join(str(d) for d in r["latent"]),
            }
        )
    return out


GPU_SECTIONS: list[tuple[str, str, list[tuple[str, str]], str]] = [
    (
        "memory",
        "1. Peak GPU memory: decoding locally vs remotely",
        [
            ("case", "case"),
            ("latent", "latent"),
            ("dtype", "dtype"),
            ("weights_gib", "VAE weights GiB"),
            ("local_gib", "local peak GiB"),
            ("local_pct", "local, share of card"),
            ("local_above_weights_gib", "local above weights GiB"),
            ("anchor_above_weights_gib", "ANCHORS above weights GiB"),
            ("tiled_gib", "local tiled GiB"),
            ("tiled_pct", "tiled, share"),
            ("remote_mib", "remote client MiB"),
            ("remote_pct", "remote, share"),
            ("local_ms", "local decode ms"),
            ("tiled_ms", "tiled ms"),
        ],
        "Local: a client that holds the VAE and decodes (weights + latent + activations + output). Remote: a client "
        "that holds only its latent and sends it. The diffusion model, the same on both sides, is left out. "
        "Full-size configs, random weights; one timed decode per row (image rows after one untimed call). "
        "Allocator figures (`max_memory_allocated`): the CUDA context, which both clients have once they use "
        "the GPU at all, is not in them. HunyuanVideo's local decode is diffusers' default, which already "
        "decodes in chunks of frames (framewise) as docs/reference-figures.md measured it; tiled adds spatial tiles.",
    ),
    (
        "server_decode",
        "2. Server-side decode time (SD v1, full size) next to docs/reference-figures.md",
        [
            ("size", "px"),
            ("dtype", "dtype"),
            ("vae_decode_ms", "vae.decode ms"),
            ("anchor_ms", "ANCHORS ms (H100)"),
            ("vs_anchor", "this / anchor"),
            ("handler_uint8_ms", "handler, uint8 tensor ms"),
            ("handler_jpeg_ms", "handler, JPEG ms"),
        ],
        "Medians of 5 after a warm-up, device synchronised. The handler columns add postprocessing, the copy to "
        "the host and (JPEG) the encode on the CPU.",
    ),
    (
        "throughput",
        "3. Throughput with and without batching (SD v1 full size, 512², JPEG)",
        [
            ("concurrency", "concurrency"),
            ("ours_rps", "ours req/s"),
            ("reference_rps", "one-at-a-time req/s"),
            ("ratio", "ratio"),
            ("ours_mean_batch", "ours mean batch"),
            ("requests", "requests per run"),
            ("repeats", "runs"),
        ],
        "Two `hf-remote-vae serve` child processes on this GPU: defaults (`MAX_BATCH_SIZE=8`) vs `MAX_BATCH_SIZE=1`.",
    ),
    (
        "remote_client",
        "4. A remote client, measured",
        [
            ("size", "px"),
            ("latent_bytes", "latent bytes"),
            ("client_peak_bytes", "client peak GPU bytes"),
            ("output_shape", "output"),
            ("output_device", "output on"),
            ("round_trip_ms", "round trip ms"),
        ],
        "This process holds a float16 latent on the GPU and decodes it with `remote_decode` against a server child "
        "process on the same GPU; the peak is this process's own, above what it held before.",
    ),
]


def write_gpu_report(path: Path, results: dict[str, Any]) -> None:
    lines = [f"# {results['title']}", "", *machine_lines(results["machine"])]
    lines += [f"- Wall time {results.get('elapsed_s')} s; per section: {results.get('seconds')}", ""]
    if results.get("dry_run"):
        lines += ["**Dry run: tiny models on the CPU. It proves the script runs; the numbers mean nothing.**", ""]
    if results.get("chart"):
        lines += [f"![chart]({results['chart']})", ""]
    for key, title, columns, notes in GPU_SECTIONS:
        result = results["sections"].get(key, {"error": "not run"})
        lines += [f"## {title}", "", notes, ""]
        if isinstance(result, dict):
            lines += [f"**This section failed:** `{result.get('error')}`", ""]
            continue
        rows = _memory_rows(result) if key == "memory" else result
        lines += [markdown_table(rows, columns), ""]
    path.write_text("\n".join(lines).rstrip() + "\n")


def write_gpu_chart(path: Path, results: dict[str, Any]) -> bool:
    """Share of the card per case: local, local tiled, remote (log scale: the remote bars are tiny)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    rows = results["sections"].get("memory")
    fig, ax = plt.subplots(figsize=(10, 5))
    ax.set_title(results["title"] + "\npeak GPU memory as a share of the card", fontsize=10)
    if isinstance(rows, list) and rows and rows[0].get("local_share") is not None:
        xs = range(len(rows))
        for i, (key, name) in enumerate(
            (("local_share", "decode locally"), ("tiled_share", "locally, tiled"), ("remote_share", "decode remotely"))
        ):
            values = [(r.get(key) or 0) * 100 for r in rows]
            ax.bar([x + (i - 1) * 0.27 for x in xs], values, 0.27, label=name)
        ax.set_xticks(list(xs))
        ax.set_xticklabels([r["case"] for r in rows], fontsize=8)
        ax.set_ylabel("% of GPU memory (log)")
        ax.set_yscale("log")
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no GPU memory figures (dry run or failed)", ha="center", va="center", transform=ax.transAxes)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True
