"""The stress scenarios besides the fuzzer: burst, soak, faults, SIGTERM under load, API_TOKEN.

Each takes a running ``Server`` (or a repo to start its own) and returns a dict of measured figures plus
``ok`` (the scenario's target met) and ``problems`` (what failed, one line each).
"""

from __future__ import annotations

import concurrent.futures
import io
import random
import socket
import statistics
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import requests
import torch
from PIL import Image

from hf_remote_vae_toolkit import media

from .fuzz import _query, big_png
from .rawhttp import Connection, NoAnswer, build_request
from .servers import Reference, Server, env_with, serve, toy_repo, wait_exit

__all__ = [
    "LatentPool",
    "burst",
    "soak",
    "slow_body",
    "idle_connections",
    "disconnects",
    "worker_faults",
    "sigterm_under_load",
    "api_token",
    "amplification",
]


class LatentPool:
    """Distinct latents with their local references; the answer to each must match its own reference and
    no other (so an answer that reached the wrong request is caught, not only a corrupt one)."""

    def __init__(self, reference: Reference, size: int = 8, hw: int = 8, seed: int = 0) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.ref = reference
        self.latents = [torch.randn(1, 4, hw, hw, generator=gen) for _ in range(size)]
        self.raw = [reference.raw(1000 * hw + seed * 100 + i, z) for i, z in enumerate(self.latents)]
        self.uint8 = [reference.uint8(1000 * hw + seed * 100 + i, z)[0] for i, z in enumerate(self.latents)]

    def body(self, i: int) -> bytes:
        return self.latents[i].numpy().tobytes()

    def query(self, i: int, **params: Any) -> str:
        pairs = [("shape", str(d)) for d in self.latents[i].shape] + [("dtype", "float32")]
        pairs += [(k, str(v).lower() if isinstance(v, bool) else str(v)) for k, v in params.items()]
        return _query(pairs)

    def nearest_image(self, pixels: np.ndarray) -> tuple[int, float, float]:
        """(closest latent, its mean abs error, the next closest's) for a decoded image."""
        errs = [float(np.abs(pixels.astype(np.float32) - ref.astype(np.float32)).mean()) for ref in self.uint8]
        order = np.argsort(errs)
        return int(order[0]), errs[order[0]], errs[order[1]] if len(errs) > 1 else float("inf")

    def nearest_raw(self, x: torch.Tensor, unit: bool = False) -> tuple[int, float]:
        refs = [(r / 2 + 0.5).clamp(0, 1) for r in self.raw] if unit else self.raw
        errs = [float((x - ref).abs().max()) if x.shape == ref.shape else float("inf") for ref in refs]
        best = int(np.argmin(errs))
        return best, errs[best]


# output kind -> (query params, Accept)
KINDS: dict[str, tuple[dict[str, Any], str]] = {
    "raw": ({"output_type": "pt"}, "tensor/binary"),
    "uint8": ({"output_type": "pt", "partial_postprocess": True}, "tensor/binary"),
    "unit": ({"output_type": "pil"}, "tensor/binary"),
    "png": ({"output_type": "pil"}, "image/png"),
    "jpeg": ({"output_type": "pil", "jpeg_quality": 90}, "image/jpeg"),
    "webp": ({"output_type": "pil"}, "image/webp"),
}

#: Mean absolute error (0-255 scale) a lossless answer may have against the local decode (float rounding
#: may flip a value by one level); a lossy one (JPEG, WebP) must instead be closer to its own latent's image
#: than to any other by ``LOSSY_MARGIN``x (these tiny random models decode to noise, which JPEG keeps badly).
LOSSLESS_TOLERANCE = 0.05
LOSSY_MARGIN = 2.0


def check_decode(pool: LatentPool, i: int, kind: str, status: int, body: bytes, headers: Any) -> str | None:
    """None when ``body`` is the right answer for latent ``i`` in ``kind``, else what is wrong."""
    if status != 200:
        return f"status {status}: {body[:160]!r}"
    if kind in ("raw", "unit"):
        x = torch.from_numpy(np.frombuffer(body, dtype=np.float32).copy())
        x = x.reshape(pool.raw[i].shape) if x.numel() == pool.raw[i].numel() else x
        best, err = pool.nearest_raw(x, unit=kind == "unit")
        if best != i or err > 2e-3:
            return f"{kind}: closest to latent {best} (max abs error {err:.3g}), sent latent {i}"
        return None
    if kind == "uint8":
        arr = np.frombuffer(body, dtype=np.uint8)
        if arr.size != pool.uint8[i].size:
            return f"uint8: {arr.size} values, expected {pool.uint8[i].size}"
        best, err, second = pool.nearest_image(arr.reshape(pool.uint8[i].shape))
    else:
        pixels = np.asarray(Image.open(io.BytesIO(body)).convert("RGB"))
        best, err, second = pool.nearest_image(pixels)
    ok = best == i and (err <= LOSSLESS_TOLERANCE if kind in ("uint8", "png") else err * LOSSY_MARGIN <= second)
    if not ok:
        return f"{kind}: closest to latent {best} (mean abs error {err:.3g}, next {second:.3g}), sent latent {i}"
    return None


def _decode_request(pool: LatentPool, i: int, kind: str, rid: str) -> bytes:
    params, accept = KINDS[kind]
    headers = [("X-Request-Id", rid), ("Content-Type", "tensor/binary"), ("Accept", accept)]
    return build_request("POST", "/?" + pool.query(i, **params), headers, pool.body(i))


# --------------------------------------------------------------------------- burst


def burst(server: Server, pool: LatentPool, n: int, queue_size: int) -> dict[str, Any]:
    """``n`` requests at once (one connection each); every answer must be a correct 200 or a 429 with
    ``Retry-After``; none lost."""
    barrier = threading.Barrier(n)
    kinds = list(KINDS)

    def one(k: int) -> tuple[str, str | None]:
        i, kind = k % len(pool.latents), kinds[k % len(kinds)]
        conn = Connection(server.host, server.port, 120)
        try:
            conn.ensure()
            barrier.wait(30)
            r = conn.exchange(_decode_request(pool, i, kind, f"b{k}"), 120)
        except (NoAnswer, OSError, threading.BrokenBarrierError) as exc:
            return "lost", f"b{k}: {exc}"
        finally:
            conn.close()
        if r.status == 429:
            return ("429", None) if r.headers.get("retry-after", "").isdigit() else ("429", "429 without Retry-After")
        if r.headers.get("x-request-id") != f"b{k}":
            return "wrong", f"b{k} labelled {r.headers.get('x-request-id')}"
        problem = check_decode(pool, i, kind, r.status, r.body, r.headers)
        return ("200", None) if problem is None else ("wrong", f"b{k}: {problem}")

    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(n) as ex:
        results = list(ex.map(one, range(n)))
    outcomes = Counter(o for o, _ in results)
    problems = [p for _, p in results if p]
    return {
        "requests": n,
        "queue_size": queue_size,
        "ok_200": outcomes["200"],
        "refused_429_with_retry_after": outcomes["429"] - sum(1 for o, p in results if o == "429" and p),
        "lost": outcomes["lost"],
        "wrong": outcomes["wrong"],
        "seconds": round(time.monotonic() - started, 2),
        "ok": not problems and outcomes["200"] + outcomes["429"] == n,
        "problems": problems[:20],
    }


# --------------------------------------------------------------------------- soak


def soak(
    server: Server,
    pool: LatentPool,
    n: int,
    *,
    encode_server: Server | None = None,
    reference: Reference | None = None,
    concurrency: int = 2,
    window: int = 1000,
) -> dict[str, Any]:
    """``n`` mixed requests over kept-alive connections (``concurrency`` clients), every answer checked;
    server RSS at ``window`` requests and at the end; p99 latency of the first and last window."""
    kinds = list(KINDS)
    rng = random.Random(1)
    plan = [
        (rng.randrange(len(pool.latents)), rng.choice([*kinds, "encode"] if encode_server else kinds)) for _ in range(n)
    ]
    latencies = [0.0] * n
    problems: list[str] = []
    counts: Counter[str] = Counter()
    rss: dict[str, int] = {}
    lock = threading.Lock()
    done = [0]
    png_cache: dict[int, tuple[bytes, torch.Tensor]] = {}
    if encode_server is not None and reference is not None:
        for i in range(len(pool.latents)):
            png = media.encode_png(Image.fromarray(pool.uint8[i]))
            pixels = torch.from_numpy(pool.uint8[i].astype(np.float32) / 255.0).permute(2, 0, 1).unsqueeze(0)
            png_cache[i] = (png, reference.encode(2 * pixels - 1))

    def client(worker: int) -> None:
        conns = {"decode": Connection(server.host, server.port, 120)}
        if encode_server is not None:
            conns["encode"] = Connection(encode_server.host, encode_server.port, 120)
        for k in range(worker, n, concurrency):
            i, kind = plan[k]
            rid = f"s{k}"
            started = time.perf_counter()
            try:
                if kind == "encode":
                    png, expected = png_cache[i]
                    r = conns["encode"].exchange(
                        build_request(
                            "POST",
                            "/",
                            [("X-Request-Id", rid), ("Content-Type", "image/png"), ("Accept", "tensor/binary")],
                            png,
                        ),
                        120,
                    )
                    problem = None if r.status == 200 else f"status {r.status}: {r.body[:160]!r}"
                    if problem is None:
                        got = np.frombuffer(r.body, dtype=np.float32)
                        ok = got.size == expected.numel() and float(np.abs(got - expected.numpy().ravel()).max()) < 2e-3
                        problem = None if ok else "encode: latents differ from the local encode"
                else:
                    r = conns["decode"].exchange(_decode_request(pool, i, kind, rid), 120)
                    problem = check_decode(pool, i, kind, r.status, r.body, r.headers)
                if problem is None and r.headers.get("x-request-id") != rid:
                    problem = f"labelled {r.headers.get('x-request-id')}"
            except NoAnswer as exc:
                problem = f"no answer: {exc}"
                for c in conns.values():
                    c.close()
            latencies[k] = time.perf_counter() - started
            with lock:
                counts[kind] += 1
                if problem:
                    problems.append(f"{rid} ({kind}, latent {i}): {problem}")
                done[0] += 1
                if done[0] == window:
                    rss["at_window"] = server.rss()
        for c in conns.values():
            c.close()

    rss["start"] = server.rss()
    started = time.monotonic()
    threads = [threading.Thread(target=client, args=(w,)) for w in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.monotonic() - started
    rss["end"] = server.rss()

    def p99(xs: list[float]) -> float:
        return float(np.percentile(xs, 99)) * 1000 if xs else 0.0

    first = latencies[window : 2 * window] if n >= 3 * window else latencies[: n // 3]
    last = latencies[-window:] if n >= 3 * window else latencies[-(n // 3) :]
    windows = [round(p99(latencies[i : i + window]), 1) for i in range(0, n - window + 1, window)]
    growth = (rss["end"] - rss.get("at_window", rss["start"])) / max(1, rss.get("at_window", rss["start"]))
    drift = p99(last) / p99(first) if p99(first) else 0.0
    return {
        "requests": n,
        "concurrency": concurrency,
        "kinds": dict(counts),
        "wrong_or_failed": len(problems),
        "seconds": round(seconds, 1),
        "requests_per_s": round(n / seconds, 1),
        "median_ms": round(statistics.median(latencies) * 1000, 2),
        "p99_first_window_ms": round(p99(first), 2),
        "p99_last_window_ms": round(p99(last), 2),
        "p99_drift": round(drift, 3),
        "p99_per_window_ms": windows,
        "rss_mib": {k: round(v / 2**20, 1) for k, v in rss.items()},
        "rss_growth_window_to_end": round(growth, 4),
        "ok": not problems and growth < 0.05,
        "ok_latency": drift < 1.2,
        "problems": problems[:20],
    }


# --------------------------------------------------------------------------- faults


def slow_body(server: Server, pool: LatentPool, seconds_limit: float = 40.0) -> dict[str, Any]:
    """A body sent at 1 byte/s is cut off (408 + close) after the documented read timeout, and a normal
    request sent meanwhile is served at once (the slow client holds no worker)."""
    sock = socket.create_connection((server.host, server.port), timeout=seconds_limit)
    head = build_request("POST", "/?" + pool.query(0, output_type="pt"), [("Content-Type", "tensor/binary")], b"")
    head = head.replace(b"Content-Length: 0", f"Content-Length: {len(pool.body(0))}".encode())
    sock.sendall(head)
    started = time.monotonic()
    answer = b""
    served_meanwhile: float | None = None
    body = pool.body(0)
    sent = 0
    sock.settimeout(1.0)
    while time.monotonic() - started < seconds_limit:
        try:
            sock.sendall(body[sent : sent + 1])
            sent += 1
        except OSError:
            pass
        try:
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
            if b"\r\n\r\n" in answer:
                # read the rest until close
                continue
        except TimeoutError:
            pass
        except ConnectionResetError:
            answer += b"[reset]"
            break
        if served_meanwhile is None and time.monotonic() - started > 2:
            t0 = time.monotonic()
            r = requests.post(
                f"{server.url}/?{pool.query(1, output_type='pt')}",
                data=pool.body(1),
                headers={"Content-Type": "tensor/binary"},
                timeout=30,
            )
            served_meanwhile = time.monotonic() - t0 if r.status_code == 200 else -1.0
    cut_after = time.monotonic() - started
    sock.close()
    status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else None
    closed = b"connection: close" in answer.lower()
    ok = status == 408 and closed and served_meanwhile is not None and 0 <= served_meanwhile < 5
    return {
        "bytes_sent": sent,
        "cut_off_after_s": round(cut_after, 1),
        "status": status,
        "connection_closed": closed,
        "other_request_served_meanwhile_s": None if served_meanwhile is None else round(served_meanwhile, 3),
        "ok": ok,
        "problems": [] if ok else [f"slow body: status {status}, closed {closed}, other request {served_meanwhile}"],
    }


def idle_connections(server: Server, limit: float = 30.0) -> dict[str, Any]:
    """An idle connection and one with a half-sent request head are closed by the server."""
    out: dict[str, Any] = {}

    def probe(name: str, data: bytes) -> None:
        sock = socket.create_connection((server.host, server.port), timeout=limit)
        if data:
            sock.sendall(data)
        started = time.monotonic()
        try:
            got = sock.recv(1024)
            out[f"{name}_closed_after_s"] = round(time.monotonic() - started, 1)
            out[f"{name}_answer"] = got[:40].decode("latin-1")
        except TimeoutError:
            out[f"{name}_closed_after_s"] = None
        sock.close()

    probes = [
        threading.Thread(target=probe, args=(name, data))
        for name, data in (("idle", b""), ("half_head", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Ty"))
    ]
    for t in probes:
        t.start()
    for t in probes:
        t.join()
    ok = all(out.get(f"{n}_closed_after_s") is not None for n in ("idle", "half_head"))
    out["ok"] = ok
    out["problems"] = [] if ok else ["a connection stayed open"]
    return out


def disconnects(server: Server, pool: LatentPool, big: LatentPool) -> dict[str, Any]:
    """Clients that leave mid-upload, while queued, and mid-response; the server stays healthy and keeps
    answering correctly."""
    problems: list[str] = []
    # mid-upload
    sock = socket.create_connection((server.host, server.port), timeout=10)
    head = build_request(
        "POST", "/?" + pool.query(0, output_type="pt"), [("Content-Type", "tensor/binary")], pool.body(0)
    )
    sock.sendall(head[: len(head) - 100])
    sock.close()
    # while queued: a long request holds the worker, a second one queues and leaves
    long_rq = _decode_request(big, 0, "raw", "hold")
    holder = Connection(server.host, server.port, 120)
    holder.send(long_rq)
    time.sleep(0.2)
    queued = socket.create_connection((server.host, server.port), timeout=10)
    queued.sendall(_decode_request(pool, 1, "raw", "leaves"))
    time.sleep(0.1)
    queued.close()
    try:
        r = holder.read_response(120)
        if check_decode(big, 0, "raw", r.status, r.body, r.headers):
            problems.append("the held request's answer was wrong")
    except NoAnswer as exc:
        problems.append(f"the held request got no answer: {exc}")
    holder.close()
    # mid-response: ask for a large answer, read a little, leave
    sock = socket.create_connection((server.host, server.port), timeout=30)
    sock.sendall(_decode_request(big, 1, "raw", "reads-a-little"))
    sock.recv(1000)
    sock.close()
    time.sleep(0.5)
    health = requests.get(f"{server.url}/health", timeout=10).status_code
    conn = Connection(server.host, server.port, 60)
    r = conn.exchange(_decode_request(pool, 2, "raw", "after"), 60)
    conn.close()
    problem = check_decode(pool, 2, "raw", r.status, r.body, r.headers)
    if problem:
        problems.append(f"after the disconnects: {problem}")
    if health != 200:
        problems.append(f"/health answered {health}")
    return {"health_after": health, "ok": not problems, "problems": problems}


def worker_faults(workdir: Path, http: str) -> dict[str, Any]:
    """A handler raising SystemExit / KeyboardInterrupt answers a JSON 500 and the next request is served;
    a handler stuck past REQUEST_TIMEOUT_S makes /health answer 503 until it returns."""
    repo = toy_repo(workdir / "toy-faults")
    problems: list[str] = []
    out: dict[str, Any] = {}
    with serve(repo, http, env_with(REQUEST_TIMEOUT_S=2)) as server:
        for what in ("exit", "interrupt"):
            r = requests.post(f"{server.url}/?do={what}", json={"inputs": 1}, timeout=30)
            nxt = requests.post(f"{server.url}/", json={"inputs": 2}, timeout=30)
            out[f"{what}_status"] = r.status_code
            out[f"{what}_json"] = r.headers.get("content-type", "").startswith("application/json")
            out[f"next_after_{what}"] = nxt.status_code
            if r.status_code != 500 or not out[f"{what}_json"] or nxt.status_code != 200:
                problems.append(f"{what}: {r.status_code} {r.text[:100]!r}, next {nxt.status_code}")
        box: dict[str, Any] = {}

        def stuck() -> None:
            box["r"] = requests.post(f"{server.url}/?do=sleep&s=5", json={"inputs": 3}, timeout=30)

        t = threading.Thread(target=stuck)
        t.start()
        time.sleep(3.0)
        during = requests.get(f"{server.url}/health", timeout=10)
        t.join()
        time.sleep(2.5)
        after = requests.get(f"{server.url}/health", timeout=10).status_code
        nxt = requests.post(f"{server.url}/", json={"inputs": 4}, timeout=30).status_code
        out.update(
            stuck_request_status=box["r"].status_code,
            health_while_stuck=during.status_code,
            health_while_stuck_says=during.text[:120],
            health_after_it_returned=after,
            next_after_stuck=nxt,
        )
        if box["r"].status_code != 504 or during.status_code != 503 or after != 200 or nxt != 200:
            problems.append(f"stuck worker: {out}")
    out["ok"] = not problems
    out["problems"] = problems
    return out


def sigterm_under_load(workdir: Path, http: str, queued: int = 6, hold_s: float = 3.0) -> dict[str, Any]:
    """SIGTERM with one request running (a handler that takes ``hold_s``) and ``queued`` waiting: the running
    one finishes with its own answer, the queued ones get a JSON 503 with Retry-After, a request sent during
    the drain gets a 503 (or a refused connection once the socket is closed), and the process exits 0.

    The toy handler makes the timing certain (a VAE decode on these tiny weights is over in milliseconds)."""
    repo = toy_repo(workdir / "toy-sigterm")
    problems: list[str] = []
    with serve(repo, http, env_with(SHUTDOWN_GRACE_S=20, MAX_QUEUE_SIZE=64)) as server:
        results: dict[str, Any] = {}

        def send(name: str, query: str) -> None:
            try:
                results[name] = requests.post(f"{server.url}/?{query}", json={"inputs": name}, timeout=60)
            except requests.RequestException as exc:
                results[name] = exc

        threads = [threading.Thread(target=send, args=("running", f"do=sleep&s={hold_s}"))]
        threads[0].start()
        time.sleep(0.5)
        for q in range(queued):
            threads.append(threading.Thread(target=send, args=(f"queued{q}", "")))
            threads[-1].start()
        time.sleep(0.5)
        sent_at = time.monotonic()
        server.proc.send_signal(15)
        time.sleep(0.3)  # uvicorn looks at its exit flag every 0.1 s
        try:
            late = requests.post(server.url, json={"inputs": "late"}, timeout=10)
            late_result: Any = (late.status_code, late.headers.get("retry-after"), late.headers.get("content-type"))
        except requests.ConnectionError:
            late_result = "connection refused (socket already closed)"
        for t in threads:
            t.join(60)
        code = wait_exit(server.proc, 60)
        exit_s = time.monotonic() - sent_at
    running = results.get("running")
    running_ok = isinstance(running, requests.Response) and running.status_code == 200
    running_ok = running_ok and running.json() == {"ok": True, "inputs": "running"}
    answers = [results.get(f"queued{q}") for q in range(queued)]
    statuses = Counter(r.status_code if isinstance(r, requests.Response) else "no answer" for r in answers)
    q_ok = all(
        isinstance(r, requests.Response)
        and r.status_code == 503
        and r.headers.get("retry-after")
        and r.headers.get("content-type", "").startswith("application/json")
        for r in answers
    )
    late_ok = late_result == "connection refused (socket already closed)" or (
        isinstance(late_result, tuple) and late_result[0] == 503 and late_result[1]
    )
    if not running_ok:
        problems.append(f"the running request: {running!r}")
    if not q_ok:
        problems.append(f"queued answers: {dict(statuses)}")
    if not late_ok:
        problems.append(f"a request during the drain: {late_result}")
    if code != 0:
        problems.append(f"exit code {code}")
    return {
        "running_request_correct": running_ok,
        "queued": queued,
        "queued_statuses": {str(k): v for k, v in statuses.items()},
        "request_during_drain": late_result if isinstance(late_result, str) else list(late_result),
        "exit_code": code,
        "exit_after_s": round(exit_s, 2),
        "ok": not problems,
        "problems": problems,
    }


def api_token(repo: Path, http: str, pool: LatentPool) -> dict[str, Any]:
    """401 JSON without or with a wrong token, 200 with the right one, the token never in the log, and the
    time to refuse a wrong token that differs early or late (a constant-time comparison: hmac.compare_digest)."""
    token = "stress-token-" + "k" * 40
    problems: list[str] = []
    with serve(repo, http, env_with(API_TOKEN=token, LOG_LEVEL="debug")) as server:
        url = f"{server.url}/?{pool.query(0, output_type='pt')}"
        kw: dict[str, Any] = {"data": pool.body(0), "timeout": 30}
        base = {"Content-Type": "tensor/binary"}
        none = requests.post(url, headers=base, **kw)
        wrong = requests.post(url, headers={**base, "Authorization": "Bearer nope"}, **kw)
        right = requests.post(url, headers={**base, "Authorization": f"Bearer {token}"}, **kw)
        early = "X" + token[1:]
        late = token[:-1] + "X"
        timings: dict[str, list[float]] = {"early": [], "late": []}
        with requests.Session() as s:
            for _ in range(200):
                for name, t in (("early", early), ("late", late)):
                    t0 = time.perf_counter()
                    s.post(url, headers={**base, "Authorization": f"Bearer {t}"}, **kw)
                    timings[name].append(time.perf_counter() - t0)
        log = server.log_text()
    for name, r, want in (("no token", none, 401), ("wrong token", wrong, 401), ("right token", right, 200)):
        if r.status_code != want:
            problems.append(f"{name}: {r.status_code}")
    if not none.headers.get("content-type", "").startswith("application/json"):
        problems.append("401 is not JSON")
    if token in log:
        problems.append("the token appears in the server log")
    med = {k: statistics.median(v) * 1e6 for k, v in timings.items()}
    return {
        "no_token": none.status_code,
        "wrong_token": wrong.status_code,
        "right_token": right.status_code,
        "token_in_log": token in log,
        "log_bytes_checked": len(log),
        "median_refusal_us_first_char_wrong": round(med["early"], 1),
        "median_refusal_us_last_char_wrong": round(med["late"], 1),
        "comparison": "hmac.compare_digest (constant time)",
        "ok": not problems,
        "problems": problems,
    }


def amplification(decode: Server, encode: Server) -> dict[str, Any]:
    """Requests that are small on the wire and huge in memory: answered 4xx before the memory is spent."""
    out: dict[str, Any] = {}
    problems: list[str] = []
    before = encode.rss()
    r = requests.post(encode.url, data=big_png(9000, 9000), headers={"Content-Type": "image/png"}, timeout=60)
    out["png_9000x9000"] = {"bytes": len(big_png(9000, 9000)), "status": r.status_code}
    out["png_9000x9000"]["rss_growth_mib"] = round((encode.rss() - before) / 2**20, 1)
    if r.status_code not in (400, 413) or out["png_9000x9000"]["rss_growth_mib"] > 50:
        problems.append(f"9000x9000 PNG: {out['png_9000x9000']}")
    # a batch far over the host's memory on a CPU: refused by the memory estimate
    z = torch.zeros(24, 4, 64, 64)
    q = _query([("shape", str(d)) for d in z.shape] + [("dtype", "float32"), ("output_type", "pt")])
    before = decode.rss()
    t0 = time.monotonic()
    r = requests.post(
        f"{decode.url}/?{q}", data=z.numpy().tobytes(), headers={"Content-Type": "tensor/binary"}, timeout=300
    )
    out["batch_24_at_512"] = {
        "status": r.status_code,
        "seconds": round(time.monotonic() - t0, 2),
        "rss_growth_mib": round((decode.rss() - before) / 2**20, 1),
        "message": r.text[:200],
    }
    if r.status_code != 413:
        out["batch_24_at_512"]["note"] = "admitted: the estimate fits this machine's memory"
    out["ok"] = not problems
    out["problems"] = problems
    return out
