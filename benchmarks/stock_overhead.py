"""Per-request overhead against the stock toolkit: ``python -m benchmarks.stock_overhead`` (``make bench-stock``).

The REAL stock toolkit (huggingface-inference-toolkit 0.5.6 from ``.venv-stock``, ``make stock-venv``)
and our server (``hf-remote-vae serve``) each run as their own process, serving the same handler that
does nothing (it returns ``{"ok": true}``). A load generator in this process keeps ``c`` keep-alive
connections busy for a fixed window and counts answers:

- cases: a small JSON body (``{"inputs": "hello"}``) and a 1 MiB binary body (``audio/x-audio``: the
  one binary type the stock toolkit passes to a handler untouched), each at concurrency 1 and 8;
- interleaved: every round measures both servers back to back in short windows, the order flipping
  each round, so a neighbour's load on a shared machine hits both alike;
- ratio = the median over rounds of (our requests/s / stock requests/s) in that round (>= 1: no slower
  than stock); at concurrency 1 the extra time per request is 1/ours - 1/stock (medians);
- CPU per request: each server process's own CPU time (user + system, from /proc) over the window,
  divided by the answers. On a busy machine throughput swings with the neighbours' load; the CPU a
  server spends per request barely does, so it is the steadier overhead figure.

The load generator writes pre-built requests on raw sockets (no HTTP client library in the way) and
reads each answer fully (``Content-Length``), checking the status is 200. Writes ``--out``/
``stock-overhead-<date>.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.report import update_index

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = Path(__file__).resolve().parent / "results"
STOCK_APP = "huggingface_inference_toolkit.webservice_starlette:app"

NOOP_HANDLER = '''"""Does nothing: the benchmark measures the server around it."""


class EndpointHandler:
    def __init__(self, path=""):
        self.path = path

    def __call__(self, data):
        return {"ok": True}
'''


@dataclass(frozen=True)
class Body:
    name: str
    content_type: str
    payload: bytes


BODIES = (
    Body("json-small", "application/json", b'{"inputs": "hello"}'),
    Body("binary-1MiB", "audio/x-audio", bytes(range(256)) * 4096),
)


def build_request(body: Body) -> bytes:
    head = (
        "POST / HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: {body.content_type}\r\nContent-Length: {len(body.payload)}\r\nAccept: */*\r\n\r\n"
    )
    return head.encode("ascii") + body.payload


async def _one_connection(port: int, request: bytes, stop: float, done: list[int]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while time.perf_counter() < stop:
            writer.write(request)
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            body = await reader.readexactly(length)
            if status != 200:
                raise RuntimeError(f"status {status}: {body[:200]!r}")
            done[0] += 1
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


async def _load(port: int, request: bytes, concurrency: int, seconds: float) -> tuple[int, float]:
    done = [0]
    started = time.perf_counter()
    await asyncio.gather(*(_one_connection(port, request, started + seconds, done) for _ in range(concurrency)))
    return done[0], time.perf_counter() - started


def cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU time of process ``pid`` so far (Linux /proc), or None where unknown."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(
    port: int, body: Body, concurrency: int, seconds: float, warmup: float, pid: int | None = None
) -> tuple[float, float | None]:
    """(requests/s, server CPU seconds per request or None) over one window of load."""
    request = build_request(body)
    if warmup > 0:
        asyncio.run(_load(port, request, concurrency, warmup))
    cpu_before = cpu_seconds(pid)
    count, elapsed = asyncio.run(_load(port, request, concurrency, seconds))
    cpu_after = cpu_seconds(pid)
    cpu = None if cpu_before is None or cpu_after is None or not count else (cpu_after - cpu_before) / count
    return count / elapsed, cpu


def requests_per_second(port: int, body: Body, concurrency: int, seconds: float, warmup: float) -> float:
    return measure(port, body, concurrency, seconds, warmup)[0]


def _wait_ready(port: int, proc: subprocess.Popen[bytes], log_path: str, timeout: float = 300.0) -> None:
    import http.client

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}; its log:\n{Path(log_path).read_text()}")
        with contextlib.suppress(OSError):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            try:
                conn.request("GET", "/health")
                if conn.getresponse().status == 200:
                    return
            finally:
                conn.close()
        time.sleep(0.1)
    raise TimeoutError(f"server on port {port} not ready in {timeout} s; its log:\n{Path(log_path).read_text()}")


@contextlib.contextmanager
def server(command: list[str], env: dict[str, str]) -> Iterator[tuple[int, int]]:
    """A server process on a free port (``{port}`` in ``command`` / ``PORT`` in env); yields (port, pid)."""
    from hf_remote_vae_toolkit.testing import free_port

    port = free_port()
    command = [part.replace("{port}", str(port)) for part in command]
    with tempfile.NamedTemporaryFile(prefix="bench-server-", suffix=".log", delete=False) as log:
        proc = subprocess.Popen(
            command, env={**env, "PORT": str(port)}, stdout=log, stderr=subprocess.STDOUT, cwd=tempfile.gettempdir()
        )
    try:
        _wait_ready(port, proc, log.name)
        yield port, proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        with contextlib.suppress(OSError):
            os.unlink(log.name)


def _base_env(model_dir: Path) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/tmp"),
        "HF_MODEL_DIR": str(model_dir),
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
    }


def _stack(python: str) -> str:
    """Which event loop and HTTP parser uvicorn picks in that venv (it takes uvloop/httptools when present)."""
    code = "import importlib.util as u;print(('uvloop' if u.find_spec('uvloop') else 'asyncio')+'+'+('httptools' if u.find_spec('httptools') else 'h11'))"
    return subprocess.run([python, "-c", code], capture_output=True, text=True, check=True).stdout.strip()


def run(stock_python: Path, rounds: int, seconds: float, warmup: float, log: Any = print) -> dict[str, Any]:
    if not stock_python.is_file():
        raise SystemExit(f"{stock_python} is missing: build the stock toolkit's venv with `make stock-venv`")
    with tempfile.TemporaryDirectory(prefix="noop-handler-") as tmp:
        model_dir = Path(tmp)
        (model_dir / "handler.py").write_text(NOOP_HANDLER)
        env = _base_env(model_dir)
        stock_cmd = [str(stock_python), "-m", "uvicorn", STOCK_APP, "--host", "127.0.0.1", "--port", "{port}"]
        ours_cmd = [sys.executable, "-m", "hf_remote_vae_toolkit", "serve", "--host", "127.0.0.1", "--port", "{port}"]
        rows = []
        with server(stock_cmd, env) as stock, server(ours_cmd, env) as ours:
            servers = {"stock": stock, "ours": ours}
            for body in BODIES:
                for concurrency in (1, 8):
                    rps: dict[str, list[float]] = {"stock": [], "ours": []}
                    cpu: dict[str, list[float]] = {"stock": [], "ours": []}
                    for r in range(rounds):
                        for name in ("stock", "ours") if r % 2 == 0 else ("ours", "stock"):
                            port, pid = servers[name]
                            rate, cpu_per_request = measure(port, body, concurrency, seconds, warmup, pid)
                            rps[name].append(rate)
                            if cpu_per_request is not None:
                                cpu[name].append(cpu_per_request)
                    rows.append(_row(body.name, concurrency, rps, cpu))
                    log(
                        f"{body.name:12s} c={concurrency}: stock {rows[-1]['stock_rps']:8.1f} req/s, "
                        f"ours {rows[-1]['ours_rps']:8.1f} req/s, ratio {rows[-1]['ratio']:.2f}; CPU/request "
                        f"stock {rows[-1]['stock_cpu_us']} us, ours {rows[-1]['ours_cpu_us']} us"
                    )
    return {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_average": list(os.getloadavg()),
            "ours_stack": _stack(sys.executable),
            "stock_stack": _stack(str(stock_python)),
        },
        "plan": {"rounds": rounds, "seconds_per_window": seconds, "warmup_s": warmup},
        "rows": rows,
    }


def _row(body: str, concurrency: int, rps: dict[str, list[float]], cpu: dict[str, list[float]]) -> dict[str, Any]:
    stock_rps, ours_rps = statistics.median(rps["stock"]), statistics.median(rps["ours"])
    round_ratios = [o / s for o, s in zip(rps["ours"], rps["stock"])]
    stock_cpu = statistics.median(cpu["stock"]) * 1e6 if cpu["stock"] else None
    ours_cpu = statistics.median(cpu["ours"]) * 1e6 if cpu["ours"] else None
    return {
        "body": body,
        "concurrency": concurrency,
        "stock_rps": round(stock_rps, 1),
        "ours_rps": round(ours_rps, 1),
        "ratio": round(statistics.median(round_ratios), 3),
        "extra_ms_per_request": round(1000 / ours_rps - 1000 / stock_rps, 3) if concurrency == 1 else None,
        "stock_cpu_us": None if stock_cpu is None else round(stock_cpu),
        "ours_cpu_us": None if ours_cpu is None else round(ours_cpu),
        "round_ratios": [round(v, 3) for v in round_ratios],
        "stock_samples": [round(v, 1) for v in rps["stock"]],
        "ours_samples": [round(v, 1) for v in rps["ours"]],
    }


def write_report(result: dict[str, Any], out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = out_dir / f"stock-overhead-{result['date'][:10]}"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    machine, plan = result["machine"], result["plan"]
    lines = [
        f"# Per-request overhead: our server vs the stock toolkit 0.5.6 ({result['date']})",
        "",
        "`make bench-stock` (`benchmarks/stock_overhead.py`): a handler that does nothing, served by each, "
        f"measured interleaved ({plan['rounds']} rounds of {plan['seconds_per_window']} s windows per server, "
        "order flipped each round). Ratio = the median over rounds of ours / stock requests/s (>= 1: no slower); "
        "CPU/request = the server process's own CPU time per answer (median over rounds), the figure least "
        "moved by other load on the machine.",
        "",
        f"Machine: {machine['cpus']} CPUs, Python {machine['python']}, load average "
        f"{', '.join(f'{v:.2f}' for v in machine['load_average'])}; uvicorn stack: ours {machine['ours_stack']}, "
        f"stock {machine['stock_stack']}.",
        "",
        "| body | concurrency | stock req/s | ours req/s | ratio | extra ms/request (c=1) "
        "| stock CPU us/request | ours CPU us/request | per-round ratios |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        extra = "" if row["extra_ms_per_request"] is None else f"{row['extra_ms_per_request']:+.3f}"
        lines.append(
            f"| {row['body']} | {row['concurrency']} | {row['stock_rps']:.1f} | {row['ours_rps']:.1f} | "
            f"{row['ratio']:.2f} | {extra} | {row['stock_cpu_us']} | {row['ours_cpu_us']} | "
            f"{', '.join(f'{v:.2f}' for v in row['round_ratios'])} |"
        )
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    update_index(out_dir)  # results/README.md lists every report
    return stem.with_suffix(".md")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stock-venv", type=Path, default=Path(os.environ.get("STOCK_VENV") or REPO / ".venv-stock"))
    parser.add_argument("--rounds", type=int, default=6, help="interleaved rounds per case (median taken)")
    parser.add_argument("--seconds", type=float, default=1.0, help="measured window per server and round")
    parser.add_argument("--warmup", type=float, default=0.2, help="unmeasured load before each window")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where the .md and .json go")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    # absolute, not resolved: the venv's python is a symlink, and the servers run from a temporary directory
    result = run(args.stock_venv.absolute() / "bin" / "python", args.rounds, args.seconds, args.warmup)
    if not args.no_write:
        print(f"report: {write_report(result, args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
