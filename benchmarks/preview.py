"""Preview tier vs full VAE: decode time and peak memory of TAESD-class decoders against the full KL VAEs.

    python -m benchmarks.preview                      # CPU: SD v1 vs TAESD, real architectures, ~2 min
    python -m benchmarks.preview --device cuda        # a GPU: every pair (sd-v1/taesd, sdxl/taesdxl, flux/taef1)
    python -m benchmarks.preview --quick --out /tmp/p # tiny configs, a few seconds (tests/preview runs this)

Both decoders have their real architectures (``Family.full_config``) with random weights: time and memory do
not depend on the weights. Per image size, each decoder is warmed up, then the two alternate in every
repeat (a burst of load hits both) and the medians are reported. Peak memory is the activations above the
loaded weights: ``torch.cuda.max_memory_allocated`` on a GPU; on a CPU the process's peak resident set
(``VmHWM``, reset through ``/proc/self/clear_refs`` before each decode) minus the resident set before it.
``--http`` adds the round trip of one JPEG decode at the largest size through the real server (both
endpoints on loopback, the toolkit's ``remote_decode``), which is what a client waits for.

Writes ``preview-<device>-<date>.md`` and ``.json`` into ``--out`` (default ``benchmarks/results``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from hf_remote_vae_toolkit.vae.families import FAMILIES, PREVIEW_OF

from .common import load_average, machine_info, quiet_logs

__all__ = ["main", "run"]

RESULTS = Path(__file__).resolve().parent / "results"
_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _rss_kib(field: str) -> int | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _peak_bytes(fn: Callable[[], Any], device: torch.device) -> int | None:
    """Activation bytes one call of ``fn`` needs above what was allocated before it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        return int(torch.cuda.max_memory_allocated(device) - base)
    try:
        _CLEAR_REFS.write_text("5")  # resets VmHWM to the current resident set (Linux)
    except OSError:
        return None
    before = _rss_kib("VmRSS")
    fn()
    peak = _rss_kib("VmHWM")
    return None if before is None or peak is None else max(0, peak - before) * 1024


def _timed(fn: Callable[[], Any], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - start) * 1000.0


def _dtype(family: str, device: torch.device) -> torch.dtype:
    return getattr(torch, FAMILIES[family].cuda_dtype) if device.type == "cuda" else torch.float32


def _build(family: str, size: str, device: torch.device) -> Any:
    vae = FAMILIES[family].build_random(size, seed=0).eval().to(device)
    dtype = _dtype(family, device)
    return vae if dtype == torch.float32 else vae.to(dtype=dtype)


def _decoder(vae: Any, z: torch.Tensor) -> Callable[[], Any]:
    return lambda: vae.decode(z).sample


def measure_pair(
    preview: str, sides: list[int], repeats: int, device: torch.device, size: str, log: Callable[[str], None]
) -> list[dict[str, Any]]:
    """One row per image side: full and preview decode ms (median) and peak activation bytes."""
    full = PREVIEW_OF[preview]
    vaes = {"full": _build(full, size, device), "preview": _build(preview, size, device)}
    channels = FAMILIES[full].latent_channels
    rows = []
    for side in sides:
        row: dict[str, Any] = {"full": full, "preview": preview, "side": side, "device": device.type}
        latent = torch.randn(1, channels, side // 8, side // 8, generator=torch.Generator().manual_seed(0))
        calls = {
            "full": _decoder(vaes["full"], latent.to(device=device, dtype=_dtype(full, device))),
            "preview": _decoder(vaes["preview"], latent.to(device=device, dtype=_dtype(preview, device))),
        }
        with torch.inference_mode():
            for call in calls.values():
                call()  # warm-up
            times: dict[str, list[float]] = {k: [] for k in calls}
            for _ in range(repeats):
                for k, call in calls.items():  # alternate: a burst of load hits both
                    times[k].append(_timed(call, device))
            for k, call in calls.items():
                row[f"{k}_ms"] = round(statistics.median(times[k]), 2)
                row[f"{k}_peak_bytes"] = _peak_bytes(call, device)
        row["speedup"] = round(row["full_ms"] / row["preview_ms"], 1) if row["preview_ms"] else None
        fp, pp = row["full_peak_bytes"], row["preview_peak_bytes"]
        row["memory_ratio"] = round(fp / pp, 1) if fp and pp else None
        log(f"{full} vs {preview} {side}x{side}: {row['full_ms']} ms vs {row['preview_ms']} ms, peak {fp} vs {pp} B")
        rows.append(row)
    del vaes
    return rows


def _remote(url: str, z: torch.Tensor, session: Any, scaling: dict[str, Any]) -> Callable[[], Any]:
    from hf_remote_vae_toolkit.client import remote_decode

    return lambda: remote_decode(url, z, image_format="jpg", session=session, **scaling)


def measure_http(preview: str, side: int, repeats: int, size: str, log: Callable[[str], None]) -> dict[str, Any]:
    """Round trip of one JPEG decode through the real server: the full endpoint vs the preview endpoint."""
    from hf_remote_vae_toolkit.client import new_session
    from hf_remote_vae_toolkit.testing import running_server
    from hf_remote_vae_toolkit.vae.repo import init_repo

    full = PREVIEW_OF[preview]
    fam = FAMILIES[full]
    z = torch.randn(1, fam.latent_channels, side // 8, side // 8, generator=torch.Generator().manual_seed(1))
    scaling = {"scaling_factor": fam.scaling_factor, "shift_factor": fam.shift_factor}
    with tempfile.TemporaryDirectory() as tmp:
        repos = {
            "full": init_repo(f"{full}-decode", Path(tmp) / "full", random_weights=size),
            "preview": init_repo(f"{preview}-decode", Path(tmp) / "preview", random_weights=size),
        }
        with running_server(repos["full"]) as full_url, running_server(repos["preview"]) as preview_url:
            urls = {"full": full_url, "preview": preview_url}
            session = new_session()
            calls = {k: _remote(url, z, session, scaling) for k, url in urls.items()}
            for call in calls.values():
                call()
            times: dict[str, list[float]] = {k: [] for k in calls}
            for _ in range(repeats):
                for k, call in calls.items():
                    times[k].append(_timed(call, torch.device("cpu")))
    row = {f"{k}_ms": round(statistics.median(v), 2) for k, v in times.items()}
    row.update(full=full, preview=preview, side=side)
    log(f"HTTP {full} vs {preview} {side}x{side} JPEG: {row['full_ms']} ms vs {row['preview_ms']} ms")
    return row


def _mib(value: int | None) -> str:
    return "n/a" if value is None else f"{value / 2**20:,.1f}"


def render(result: dict[str, Any]) -> str:
    m = result["machine"]
    lines = [
        f"# Preview tier vs full VAE decode ({result['device']}, {m.get('date', '')})",
        "",
        f"Machine: {m.get('cpu', '')}, {m.get('cores', '?')} cores, torch threads {m.get('torch_threads', '?')}"
        + (f", GPU {m['gpu']['name']}" if m.get("gpu") else "")
        + f"; load average before: {result['load_before']}, after: {result['load_after']}.",
        f"Models: {result['size']} configs, random weights; medians of {result['repeats']} alternating repeats "
        "after a warm-up; batch 1. Peak = activation memory above the loaded weights "
        + ("(`torch.cuda.max_memory_allocated`)." if result["device"] == "cuda" else "(peak resident set, `VmHWM`)."),
        "",
        "| full | preview | image | full ms | preview ms | speed-up | full peak MiB | preview peak MiB | memory ratio |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["decode"]:
        lines.append(
            f"| {r['full']} | {r['preview']} | {r['side']}x{r['side']} | {r['full_ms']:,.1f} | {r['preview_ms']:,.1f} "
            f"| {r['speedup']}x | {_mib(r['full_peak_bytes'])} | {_mib(r['preview_peak_bytes'])} "
            f"| {str(r['memory_ratio']) + 'x' if r['memory_ratio'] else 'n/a'} |"
        )
    if result.get("http"):
        lines += [
            "",
            "Over HTTP (the real server on loopback, `remote_decode` to JPEG, what a client waits for):",
            "",
            "| full | preview | image | full endpoint ms | preview endpoint ms |",
            "|---|---|---|---:|---:|",
        ]
        for r in result["http"]:
            lines.append(
                f"| {r['full']} | {r['preview']} | {r['side']}x{r['side']} | {r['full_ms']:,.1f} | {r['preview_ms']:,.1f} |"
            )
    lines += [
        "",
        "Absolute times follow the machine's load (see the load averages); the speed-up and memory ratios come "
        "from runs alternating in the same repeats. The preview decoders' activations stay far below the full "
        "VAE's, which is why their handlers carry their own memory estimate and are never tiled.",
        "",
        "Written by `python -m benchmarks.preview` (`make bench-preview`).",
    ]
    return "\n".join(lines) + "\n"


def run(
    *,
    device: str = "cpu",
    sides: list[int] | None = None,
    repeats: int = 3,
    quick: bool = False,
    http: bool = False,
    pairs: list[str] | None = None,
    out: Path = RESULTS,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    dev = torch.device(device)
    size = "tiny" if quick else "full"
    if sides is None:
        sides = [64, 128] if quick else ([512, 1024] if dev.type == "cuda" else [256, 512])
    if pairs is None:
        pairs = sorted(PREVIEW_OF) if dev.type == "cuda" or quick else ["taesd"]
    result: dict[str, Any] = {
        "device": dev.type,
        "size": size,
        "repeats": repeats,
        "machine": machine_info(),
        "load_before": load_average(),
    }
    with quiet_logs():
        result["decode"] = [row for p in pairs for row in measure_pair(p, sides, repeats, dev, size, log)]
        result["http"] = [measure_http(p, max(sides), repeats, size, log) for p in pairs] if http else []
    result["load_after"] = load_average()
    out.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d")
    base = out / f"preview-{dev.type}{'-quick' if quick else ''}-{stamp}"
    base.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    base.with_suffix(".md").write_text(render(result))
    log(f"wrote {base}.md and .json")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--sides", type=int, nargs="+", help="image sides in pixels (multiples of 8)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--pairs", nargs="+", choices=sorted(PREVIEW_OF), help="preview families to compare")
    parser.add_argument("--quick", action="store_true", help="tiny configs: a smoke test, numbers meaningless")
    parser.add_argument("--http", action="store_true", help="also the round trip through the real server")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if any(s % 8 for s in args.sides or []):
        parser.error("--sides must be multiples of 8")
    run(
        device=args.device,
        sides=args.sides,
        repeats=args.repeats,
        quick=args.quick,
        http=args.http,
        pairs=args.pairs,
        out=args.out,
    )
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
