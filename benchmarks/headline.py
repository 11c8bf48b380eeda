"""The report's headline: one line per question the issue asks, from the section rows."""

from __future__ import annotations

from typing import Any

__all__ = ["headline"]


def _rows(sections: dict[str, Any], key: str) -> list[dict[str, Any]]:
    value = sections.get(key)
    return value if isinstance(value, list) else []


def headline(sections: dict[str, Any]) -> list[str]:
    lines = []
    overhead = _rows(sections, "overhead")
    for size in sorted({r["size"] for r in overhead}):
        rows = [r for r in overhead if r["size"] == size]
        parts = [f"{r['output']} +{r['added_ms']:.1f} ms ({r['ratio']:.2f}x)" for r in rows]
        line = f"HTTP over an in-process call at {size}², added ms (ratio on this CPU): " + ", ".join(parts)
        if rows[0].get("ratio_h100"):
            line += "; next to an H100 decode: " + ", ".join(f"{r['output']} {r['ratio_h100']:.2f}x" for r in rows)
        lines.append(line)
    throughput = _rows(sections, "throughput")
    if throughput:
        parts = [f"c={r['concurrency']}: {r['ratio']:.2f}x" for r in throughput]
        lines.append(f"Throughput, ours / reference at {throughput[0]['size']}²: " + ", ".join(parts))
    wire = _rows(sections, "wire")
    if wire:
        size = max(r["size"] for r in wire)
        parts = [f"{r['output']} {r['ratio']:.1f}x" for r in wire if r["size"] == size]
        lines.append(f"Response bytes / fp16 latent bytes at {size}²: " + ", ".join(parts))
    encoding = [r for r in _rows(sections, "encoding") if r["content"].startswith("decoded")]
    if encoding:
        size = max(r["size"] for r in encoding)
        parts = [
            f"{r['encoder']} {r['encode_ms']:.1f} ms"
            + (f" ({r['vs_h100_decode']:.2f}x an H100 decode)" if r.get("vs_h100_decode") else "")
            for r in encoding
            if r["size"] == size
        ]
        lines.append(f"Encoding at {size}²: " + ", ".join(parts))
    return lines
