"""Streamed video decode (issue 17): time to first byte, server memory against clip length, streamed frames.

    python -m benchmarks.video_stream                          # CPU, tiny Wan 2.1 at 128x128, a few minutes
    python -m benchmarks.video_stream --quick --out /tmp/vs     # 64x64, short clips, ~1 min, numbers rough
    python -m benchmarks.video_stream --device cuda --size full --side 60x104   # a GPU: the real Wan at 480p

One server on loopback (the real uvicorn app, in this process) serving the shipped video handler over random
weights of the family's ``--size`` config, the toolkit's own client. Three measurements:

1. **time to first byte** for an 81-frame clip: the streamed MP4 (``Accept: video/mp4``) against the plain one
   (``stream=false``: decode, then encode, then send), and the uint8 frame stream's first frame; each against
   the request's total time. Target: first byte <= 0.3x total.
2. **server memory** for 41 vs 161 frames: peak resident set of the process during one request above the
   resident set before it (``VmHWM`` reset through ``/proc/self/clear_refs``; on a GPU also
   ``torch.cuda.max_memory_allocated`` above the weights), streamed and plain MP4. Target: the longer clip
   needs <= 1.2x the memory of the shorter, streamed (measured as the process's whole peak resident set, and
   shown above the idle process too).
3. **frames**: the streamed uint8 frames against the one-shot uint8 decode (bit-equal), and the streamed MP4's
   decoded frames against the plain MP4's at the same CRF (PSNR, dB), each also against the exact frames.

Writes ``video-stream-<device>-<date>.md`` and ``.json`` into ``--out`` (default ``benchmarks/results``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import requests
import torch

from .common import machine_info, make_repo, quiet_logs

__all__ = ["main", "run"]

RESULTS = Path(__file__).resolve().parent / "results"
_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")
HANDLERS = {"wan": "wan-decode", "hunyuanvideo": "hunyuanvideo-decode"}


def _kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/{pid}/status")


def _latent_frames(frames: int) -> int:
    return (frames - 1) // 4 + 1


def _latents(frames: int, side: tuple[int, int], seed: int = 0) -> torch.Tensor:
    shape = (1, 16, _latent_frames(frames), *side)
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def _request(url: str, z: torch.Tensor, accept: str, **params: Any) -> tuple[float, float, bytes, dict[str, str]]:
    """One request read as it streams: (seconds to the first body byte, seconds to the last, body, headers).
    A body with a length (tensor/binary) is read a frame at a time, a chunked one a chunk at a time."""
    query = {"shape": list(z.shape), "dtype": "float32", "do_scaling": "false", **params}
    headers = {"Content-Type": "tensor/binary", "Accept": accept}
    data = z.contiguous().numpy().tobytes()
    started = time.perf_counter()
    first = None
    fragment = None  # a fragmented MP4's first frame data (the first moof box)
    pieces = []
    with requests.post(url, params=query, data=data, headers=headers, timeout=3600, stream=True) as response:
        if response.status_code != 200:
            raise RuntimeError(f"{response.status_code}: {response.text[:300]}")
        shape = json.loads(response.headers.get("shape", "[]"))
        step = int(np.prod(shape[1:])) if len(shape) == 4 else None  # uint8 [F, H, W, 3]: one frame
        for piece in response.iter_content(step):
            if first is None:
                first = time.perf_counter() - started
            pieces.append(piece)
            if fragment is None and b"moof" in piece:
                fragment = time.perf_counter() - started
        total = time.perf_counter() - started
        headers = dict(response.headers)
        if fragment is not None:
            headers["x-first-fragment-s"] = str(fragment)
        return first or total, total, b"".join(pieces), headers


def _mp4_frames(data: bytes) -> np.ndarray:
    import av

    with av.open(io.BytesIO(data)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def _smooth_video(frames: int, h: int, w: int) -> np.ndarray:
    """Moving gradients and a moving disk: content H.264 compresses as it does real video (unlike noise)."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    out = []
    for i in range(frames):
        rgb = np.stack(
            [
                127 + 100 * np.sin((x + 3 * i) / 17.0),
                127 + 100 * np.cos((y - 2 * i) / 23.0),
                127 + 100 * np.sin((x + y + 5 * i) / 31.0),
            ],
            -1,
        )
        rgb[((x - (w / 4 + 2 * i)) ** 2 + (y - h / 2) ** 2) < (h / 6) ** 2] = [240, 30, 30]
        out.append(rgb.clip(0, 255).astype(np.uint8))
    return np.stack(out)


def _encoders_on_smooth_video(frames: int, h: int, w: int) -> dict[str, Any]:
    """The streamed MP4 writer and the plain one on the same smooth clip, 4 frames per chunk, as a Wan stream."""
    from hf_remote_vae_toolkit.vae.mp4 import encode_mp4
    from hf_remote_vae_toolkit.vae.video_stream import Mp4Fragments

    video = _smooth_video(frames, h, w)
    pieces: list[bytes] = []
    writer = Mp4Fragments(pieces.append, fps=16, crf=18)
    first_fragment = None
    for start in range(0, frames, 4):
        writer.write(video[start : start + 4])
        if first_fragment is None and any(b"moof" in piece for piece in pieces):
            first_fragment = min(start + 4, frames)
    writer.close()
    streamed, plain = _mp4_frames(b"".join(pieces)), _mp4_frames(encode_mp4(video, fps=16, crf=18))
    return {
        "frames": frames,
        "first_fragment_after_frames": first_fragment,
        "psnr_streamed_vs_plain_db": _psnr(streamed, plain),
        "psnr_streamed_vs_exact_db": _psnr(streamed, video),
        "psnr_plain_vs_exact_db": _psnr(plain, video),
    }


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean())
    return float("inf") if mse == 0 else 10 * float(np.log10(255**2 / mse))


def _server_peak(repo: Path, frames: int, side: tuple[int, int], params: dict[str, Any]) -> dict[str, Any]:
    """A fresh ``hf-remote-vae serve`` process: one small warm-up request of the same kind, then the measured one;
    its peak resident set during that request (``VmHWM`` after a reset through ``clear_refs``), whole and above
    the resident set before it."""
    from hf_remote_vae_toolkit.testing import serving_process

    with serving_process(repo, {"REQUEST_TIMEOUT_S": "3600", "LOG_LEVEL": "warning"}) as (url, proc):
        _request(url, _latents(5, side), "video/mp4", output_type="mp4", **params)
        Path(f"/proc/{proc.pid}/clear_refs").write_text("5")  # VmHWM := VmRSS
        before = _kib(proc.pid, "VmRSS")
        _, total, body, _ = _request(url, _latents(frames, side, seed=frames), "video/mp4", output_type="mp4", **params)
        peak = _kib(proc.pid, "VmHWM")
    return {
        "rss_before_mib": before / 1024,
        "rss_peak_mib": peak / 1024,
        "rss_added_mib": (peak - before) / 1024,
        "total_s": total,
        "bytes": len(body),
    }


def run(args: argparse.Namespace, log: Any = print) -> dict[str, Any]:
    from hf_remote_vae_toolkit.testing import running_server
    from hf_remote_vae_toolkit.vae.video import VideoDecodeHandler

    device = torch.device(args.device)  # the in-process server; the memory servers pick the device themselves
    h, w = (int(v) for v in args.side.split("x"))
    side = (h, w)
    report: dict[str, Any] = {
        "family": args.family,
        "size": args.size,
        "device": device.type,
        "frame_px": [h * 8, w * 8],
        "machine": machine_info(),
    }
    with tempfile.TemporaryDirectory() as tmp, quiet_logs():
        repo = make_repo(HANDLERS[args.family], Path(tmp) / "repo", size=args.size)
        cls = type("EndpointHandler", (VideoDecodeHandler,), {"family": args.family})
        handler = cls(str(repo), device=device)
        with running_server(handler=handler, request_timeout_s=3600) as url:
            _request(url, _latents(5, side), "video/mp4", output_type="mp4")  # warm the path and the encoder

            # 1. time to first byte
            z = _latents(args.ttfb_frames, side, seed=1)
            rows = []
            for name, accept, params in (
                ("streamed MP4", "video/mp4", {"output_type": "mp4"}),
                ("plain MP4", "video/mp4", {"output_type": "mp4", "stream": "false"}),
                (
                    "uint8 frame stream",
                    "tensor/binary",
                    {"output_type": "pt", "partial_postprocess": "true", "stream": "true"},
                ),
                ("uint8 one-shot", "tensor/binary", {"output_type": "pt", "partial_postprocess": "true"}),
            ):
                first, total, body, got = _request(url, z, accept, **params)
                rows.append(
                    {
                        "response": name,
                        "first_byte_s": first,
                        "total_s": total,
                        "ratio": first / total,
                        "bytes": len(body),
                        "first_fragment_s": float(got["x-first-fragment-s"]) if "x-first-fragment-s" in got else None,
                    }
                )
                log(f"ttfb {name}: first byte {first:.2f} s of {total:.2f} s ({first / total:.2f}x)")
                if name == "streamed MP4":
                    streamed_mp4 = body
                elif name == "plain MP4":
                    plain_mp4 = body
                elif name == "uint8 frame stream":
                    streamed_u8 = body
                else:
                    oneshot_u8 = body
            report["ttfb"] = {"frames": args.ttfb_frames, "rows": rows}

            # 3. frames
            exact = np.frombuffer(oneshot_u8, dtype=np.uint8).reshape(args.ttfb_frames, h * 8, w * 8, 3)
            s_frames, p_frames = _mp4_frames(streamed_mp4), _mp4_frames(plain_mp4)
            report["frames"] = {
                "uint8_bit_equal": streamed_u8 == oneshot_u8,
                "mp4_frames": [len(s_frames), len(p_frames)],
                "psnr_streamed_vs_plain_db": _psnr(s_frames, p_frames),
                "psnr_streamed_vs_exact_db": _psnr(s_frames, exact),
                "psnr_plain_vs_exact_db": _psnr(p_frames, exact),
            }
            report["frames"]["smooth_clip"] = _encoders_on_smooth_video(args.ttfb_frames, h * 8, w * 8)
            log(f"frames: {report['frames']}")

            report["stream_history"] = [vars(r) for r in getattr(handler, "stream_history", [])]

        # 2. memory: a fresh server process per measurement (freed heap from an earlier request would hide a peak)
        mem = []
        for frames in args.memory_frames:
            for name, params in (("streamed MP4", {}), ("plain MP4", {"stream": "false"})):
                row = _server_peak(repo, frames, side, params)
                row.update(frames=frames, response=name)
                mem.append(row)
                log(f"memory {frames} frames {name}: peak {row['rss_peak_mib']:.0f} MiB (+{row['rss_added_mib']:.1f})")
        report["memory"] = mem
    return report


def _table(report: dict[str, Any]) -> str:
    lines = [
        f"# Streamed video decode ({report['family']}, {report['size']} config, {report['device']}, "
        f"{report['frame_px'][0]}x{report['frame_px'][1]} frames)",
        "",
        "Made by `python -m benchmarks.video_stream` (benchmarks/video_stream.py).",
        f"Machine: {report['machine'].get('cpu', '')}; load average at start {report['machine'].get('load_average')}.",
        "",
        f"## Time to first byte, {report['ttfb']['frames']} frames",
        "",
        "| response | first byte (s) | total (s) | first / total | bytes | first frame data (s) |",
        "|---|---|---|---|---|---|",
    ]
    for r in report["ttfb"]["rows"]:
        frag = r.get("first_fragment_s")
        frag_cell = f"{frag:.2f} ({frag / r['total_s']:.2f}x)" if frag is not None else "-"
        lines.append(
            f"| {r['response']} | {r['first_byte_s']:.2f} | {r['total_s']:.2f} | {r['ratio']:.2f} | {r['bytes']} "
            f"| {frag_cell} |"
        )
    lines += [
        "",
        "First byte: the MP4 header (`ftyp` + empty `moov`), sent once the first chunk is decoded; first frame data:",
        "the first `moof` fragment, which x264's look-ahead (8 frames, mp4.py) and B-frames hold back.",
        "",
        "## Server memory: peak resident set during one request",
        "",
        "A fresh `hf-remote-vae serve` process per row, warmed with one 5-frame request of the same kind. The peak",
        "resident set is the robust figure (the resident set before the request varies with what the warm-up left).",
        "",
        "| frames | response | peak RSS (MiB) | above the process before it (MiB) | total (s) |",
        "|---|---|---|---|---|",
    ]
    for r in report["memory"]:
        extra = ""
        lines.append(
            f"| {r['frames']} | {r['response']} | {r['rss_peak_mib']:.0f} | {r['rss_added_mib']:.1f}{extra} | {r['total_s']:.1f} |"
        )
    by = {(r["frames"], r["response"]): r for r in report["memory"]}
    short, long_ = report["memory"][0]["frames"], report["memory"][-1]["frames"]
    for name in ("streamed MP4", "plain MP4"):
        a, b = by[(short, name)], by[(long_, name)]
        lines.append(
            f"\n{name}: {long_} vs {short} frames: peak RSS {b['rss_peak_mib'] / a['rss_peak_mib']:.2f}x, "
            f"added {b['rss_added_mib']:.1f} vs {a['rss_added_mib']:.1f} MiB"
        )
    f = report["frames"]
    lines += [
        "",
        "## Frames",
        "",
        f"- uint8 frame stream bit-equal to the one-shot uint8 decode: **{f['uint8_bit_equal']}**",
        f"- MP4 frames (streamed, plain): {f['mp4_frames']}",
        f"- PSNR streamed MP4 vs plain MP4, same CRF: **{f['psnr_streamed_vs_plain_db']:.1f} dB**",
        f"- PSNR vs the exact frames: streamed {f['psnr_streamed_vs_exact_db']:.1f} dB, plain "
        f"{f['psnr_plain_vs_exact_db']:.1f} dB (random weights decode to noise, which H.264 compresses poorly)",
    ]
    sm = f["smooth_clip"]
    lines += [
        f"- The two MP4 writers on a smooth synthetic clip ({sm['frames']} frames, moving gradients and a disk, fed 4 "
        f"frames at a time): streamed vs plain **{sm['psnr_streamed_vs_plain_db']:.1f} dB**; vs the exact frames "
        f"streamed {sm['psnr_streamed_vs_exact_db']:.2f} dB, plain {sm['psnr_plain_vs_exact_db']:.2f} dB; the first "
        f"fragment left after {sm['first_fragment_after_frames']} frames",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", choices=sorted(HANDLERS), default="wan")
    parser.add_argument("--size", choices=["tiny", "full"], default="tiny", help="random-weights config")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--side", default="16x16", help="latent height x width (x8 pixels)")
    parser.add_argument("--ttfb-frames", type=int, default=81)
    parser.add_argument("--memory-frames", type=int, nargs=2, default=[41, 161])
    parser.add_argument("--quick", action="store_true", help="8x8 latents, 21-frame clips for every measurement")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.quick:
        args.side, args.ttfb_frames, args.memory_frames = "8x8", 21, [9, 21]
    report = run(args)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"video-stream-{report['device']}-{dt.date.today().isoformat()}"
    (args.out / f"{stem}.json").write_text(json.dumps(report, indent=1, default=str))
    (args.out / f"{stem}.md").write_text(_table(report))
    print(args.out / f"{stem}.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
