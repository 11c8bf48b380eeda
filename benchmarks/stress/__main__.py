"""``python -m benchmarks.stress``: the stress suite against real servers; writes a report, exits 1 on a miss.

Counts are options, so CI runs it small (``make stress``: about 3 minutes on 2 cores) and a release check
runs it at the issue's full counts (``--full``: 10,000 fuzzed requests, a 10,000-request soak)::

    python -m benchmarks.stress                 # small counts, report under benchmarks/results/
    python -m benchmarks.stress --full          # the full counts
    python -m benchmarks.stress --fuzz 50000 --soak 20000 --parsers httptools
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from . import fuzz, scenarios
from .servers import Reference, env_with, parsers, serve

RESULTS = Path(__file__).resolve().parents[1] / "results"

TARGETS = {
    "fuzz": "10,000 malformed requests: 0 5xx, 0 without an answer, 0 answers labelled for another request, server healthy after",
    "burst": "burst of 10x the queue: every request a correct 200 or a 429 with Retry-After, 0 lost",
    "soak": "10,000-request soak: 0 wrong answers, RSS growth under 5% from 1k to 10k requests",
    "soak_latency": "soak: p99 latency drift under 1.2x (last 1k vs the second 1k)",
    "slow_body": "a 1 byte/s body is cut off (408, connection closed) after the documented read timeout; others served meanwhile",
    "idle": "idle and half-sent-header connections are closed",
    "disconnects": "disconnects mid-upload, while queued, mid-response: the server keeps serving correctly",
    "worker_faults": "SystemExit/KeyboardInterrupt in a handler: JSON 500, next request served; a stuck worker makes /health 503",
    "sigterm": "SIGTERM with work queued: in-flight finishes, queued get JSON 503 + Retry-After, exit 0",
    "api_token": "401 JSON without/with a wrong token, token never logged, constant-time comparison",
    "amplification": "a 10 KiB 9000x9000 PNG is refused before its pixels are decoded; a CPU batch over the host's memory is a 413",
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.stress", description=__doc__.split("\n")[0])
    p.add_argument("--full", action="store_true", help="the issue's counts: --fuzz 10000 --soak 10000")
    p.add_argument("--fuzz", type=int, default=None, help="malformed requests in all (default 1200; --full 10000)")
    p.add_argument("--soak", type=int, default=None, help="soak requests (default 1500; --full 10000)")
    p.add_argument("--queue", type=int, default=8, help="MAX_QUEUE_SIZE for the burst (the burst is 10x)")
    p.add_argument("--parsers", default=",".join(parsers()), help="comma-separated: h11,httptools")
    p.add_argument("--only", default="", help="comma-separated scenario names to run (default all)")
    p.add_argument(
        "--out", type=Path, default=None, help="report path without suffix (default benchmarks/results/stress-DATE)"
    )
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    n_fuzz = args.fuzz if args.fuzz is not None else (10_000 if args.full else 1200)
    n_soak = args.soak if args.soak is not None else (10_000 if args.full else 1500)
    chosen = [s for s in args.parsers.split(",") if s]
    only = {s for s in args.only.split(",") if s}

    def want(name: str) -> bool:
        return not only or name in only

    from benchmarks.common import machine_info
    from hf_remote_vae_toolkit.vae.repo import init_repo

    report: dict[str, Any] = {"machine": machine_info(), "parsers": chosen, "results": {}, "targets": TARGETS}
    t_start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="hf-vae-stress-") as tmp:
        work = Path(tmp)
        dec = init_repo("sd-v1-decode", work / "sd-v1-decode", random_weights="tiny")
        enc = init_repo("sd-v1-encode", work / "sd-v1-encode", random_weights="tiny")
        ref = Reference(dec, enc)
        pool = scenarios.LatentPool(ref, size=8, hw=8)
        big = scenarios.LatentPool(ref, size=2, hw=64, seed=1)  # 512x512: larger answers, longer decodes
        res = report["results"]
        for http in chosen:
            log(f"[{http}] servers up")
            with serve(dec, http, env_with(MAX_QUEUE_SIZE=args.queue)) as d, serve(enc, http) as e:
                if want("fuzz"):
                    per = max(1, n_fuzz // (2 * len(chosen)))
                    out = {}
                    for name, server, canary, is_enc in (
                        ("decode", d, fuzz.decode_canary(ref, pool.latents[0]), False),
                        ("encode", e, fuzz.encode_canary(ref, fuzz.image_corpus()["png"]), True),
                    ):
                        t0 = time.monotonic()
                        r = fuzz.run_fuzz(
                            server.host,
                            server.port,
                            fuzz.cases(per, encode=is_enc, seed=args.seed, prefix=f"{http[0]}{name[0]}"),
                            canary,
                        )
                        import requests

                        health = requests.get(f"{server.url}/health", timeout=10).status_code
                        out[name] = {**r.as_dict(), "health_after": health, "seconds": round(time.monotonic() - t0, 1)}
                        log(
                            f"[{http}] fuzz {name}: {per} cases, 5xx {len(r.server_errors)}, "
                            f"no answer {len(r.no_answer)}, wrong id {len(r.wrong_id)}, canary wrong {len(r.canary_wrong)}"
                        )
                    ok = all(
                        o["5xx"] == 0
                        and o["no_answer"] == 0
                        and o["wrong_request_id"] == 0
                        and o["canary_wrong"] == 0
                        and o["health_after"] == 200
                        for o in out.values()
                    )
                    res[f"fuzz[{http}]"] = {**out, "ok": ok}
                if want("burst"):
                    res[f"burst[{http}]"] = scenarios.burst(d, pool, 10 * args.queue, args.queue)
                    log(f"[{http}] burst: {summary(res[f'burst[{http}]'])}")
                if want("soak"):
                    res[f"soak[{http}]"] = scenarios.soak(
                        d, pool, n_soak, encode_server=e, reference=ref, window=min(1000, max(100, n_soak // 10))
                    )
                    log(f"[{http}] soak: {summary(res[f'soak[{http}]'])}")
                if want("slow_body"):
                    res[f"slow_body[{http}]"] = scenarios.slow_body(d, pool)
                    log(f"[{http}] slow body: {summary(res[f'slow_body[{http}]'])}")
                if want("idle"):
                    res[f"idle[{http}]"] = scenarios.idle_connections(d)
                    log(f"[{http}] idle: {summary(res[f'idle[{http}]'])}")
                if want("disconnects"):
                    res[f"disconnects[{http}]"] = scenarios.disconnects(d, pool, big)
                    log(f"[{http}] disconnects: {summary(res[f'disconnects[{http}]'])}")
                if want("amplification"):
                    res[f"amplification[{http}]"] = scenarios.amplification(d, e)
                    log(f"[{http}] amplification: {summary(res[f'amplification[{http}]'])}")
            if want("worker_faults"):
                res[f"worker_faults[{http}]"] = scenarios.worker_faults(work, http)
                log(f"[{http}] worker faults: {summary(res[f'worker_faults[{http}]'])}")
            if want("sigterm"):
                res[f"sigterm[{http}]"] = scenarios.sigterm_under_load(work, http)
                log(f"[{http}] sigterm: {summary(res[f'sigterm[{http}]'])}")
            if want("api_token"):
                res[f"api_token[{http}]"] = scenarios.api_token(dec, http, pool)
                log(f"[{http}] api token: {summary(res[f'api_token[{http}]'])}")
    report["seconds"] = round(time.monotonic() - t_start, 1)
    report["counts"] = {"fuzz": n_fuzz, "soak": n_soak, "burst": 10 * args.queue, "queue": args.queue}
    failed = [k for k, v in report["results"].items() if not v.get("ok")]
    # the latency target is stated but only enforced with --full: at small counts on a shared CI machine a
    # p99 of a few hundred requests is noise
    slow = [k for k, v in report["results"].items() if v.get("ok_latency") is False]
    report["latency_target_missed"] = slow
    if args.full:
        failed += slow
    report["failed"] = failed
    stem = args.out or RESULTS / f"stress-{dt.date.today().isoformat()}{'' if args.full else '-small'}"
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    stem.with_suffix(".md").write_text(markdown(report))
    log(f"report: {stem.with_suffix('.md')} ({report['seconds']} s); failed: {failed or 'none'}")
    return 1 if failed else 0


def summary(result: dict[str, Any]) -> str:
    keys = [k for k in result if k not in ("problems", "ok")][:8]
    text = ", ".join(f"{k}={result[k]}" for k in keys)
    return f"{'OK' if result.get('ok') else 'FAIL'}: {text}" + (
        f"; problems: {result['problems'][:3]}" if result.get("problems") else ""
    )


def log(text: str) -> None:
    print(f"stress: {text}", file=sys.stderr, flush=True)


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [
        f"# Stress report ({m['date']})",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores; parsers: {', '.join(report['parsers'])}; counts: {report['counts']}; "
        f"{report['seconds']} s in all. Written by `python -m benchmarks.stress` (`make stress`).",
        "",
        "| scenario | result | figures |",
        "|---|---|---|",
    ]
    for name, r in report["results"].items():
        figures = {k: v for k, v in r.items() if k not in ("ok", "problems")}
        if name.startswith("fuzz["):
            figures = {
                side: {
                    k: r[side][k]
                    for k in (
                        "sent",
                        "5xx",
                        "no_answer",
                        "wrong_request_id",
                        "canaries",
                        "canary_wrong",
                        "health_after",
                        "statuses",
                        "errors_not_json",
                    )
                }
                for side in ("decode", "encode")
            }
        text = json.dumps(figures, default=str).replace("|", "/")
        lines.append(f"| {name} | {'pass' if r.get('ok') else '**FAIL**'} | {text} |")
        if "ok_latency" in r:
            verdict = "pass" if r["ok_latency"] else "**missed**"
            lines.append(
                f"| {name} latency | {verdict} | p99 drift {r['p99_drift']}x (target < 1.2x); p99 per window (ms): "
                f"{r['p99_per_window_ms']} |"
            )
    lines += ["", "Targets:", ""] + [f"- **{k}**: {v}" for k, v in report["targets"].items()]
    problems = [(k, p) for k, v in report["results"].items() for p in v.get("problems", [])]
    if problems:
        lines += ["", "Problems:", ""] + [f"- {k}: {p}" for k, p in problems[:50]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
