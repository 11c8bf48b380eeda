"""``hf-remote-vae ray-serve``: the server as Ray Serve replicas behind one HTTP port.

Starts a local Ray cluster, or joins one (``--address`` / ``RAY_ADDRESS``), deploys
``scale.ray_serve.build_app`` and serves until interrupted. Ray is imported only when this runs,
so ``hf-remote-vae --help`` stays fast and works without the ``ray`` extra.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
from typing import Any

__all__ = ["add_parser", "run", "scale_args"]

log = logging.getLogger("hf_remote_vae_toolkit")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "ray-serve",
        help="serve a model directory as Ray Serve replicas (needs the ray extra)",
        description=__doc__.splitlines()[0],
    )
    p.add_argument("--model-dir", help="directory with handler.py and the weights (env HF_MODEL_DIR)")
    p.add_argument("--port", type=int, help="HTTP port of Ray's proxy (env PORT, default 5000)")
    p.add_argument("--host", help="listening address (env HOST, default 0.0.0.0)")
    p.add_argument("--replicas", type=int, help="a fixed number of replicas (default 1)")
    p.add_argument("--min-replicas", type=int, help="autoscale: fewest replicas (0 scales to zero when idle)")
    p.add_argument("--max-replicas", type=int, help="autoscale: most replicas")
    p.add_argument("--num-cpus", type=float, default=1.0, help="CPUs reserved per replica (default 1)")
    p.add_argument(
        "--num-gpus", type=float, help="GPUs per replica (default 1 when the machine has a CUDA GPU, else 0)"
    )
    p.add_argument(
        "--max-ongoing-requests", type=int, default=8, help="requests Ray sends one replica at a time (default 8)"
    )
    p.add_argument(
        "--max-queued-requests",
        type=int,
        default=256,
        help="requests Ray holds for a replica before answering 429 + Retry-After (default 256)",
    )
    p.add_argument(
        "--target-backlog-s",
        type=float,
        default=2.0,
        help="autoscale: seconds of queued work per replica to aim for (default 2)",
    )
    p.add_argument("--address", help="Ray cluster to join (env RAY_ADDRESS); default: start a local one")
    p.add_argument("--ray-num-cpus", type=int, help="CPUs of the local Ray cluster (default: all)")
    p.set_defaults(func=run)


def _default_gpus() -> float:
    try:
        import torch

        return 1.0 if torch.cuda.is_available() else 0.0
    except ImportError:  # pragma: no cover
        return 0.0


def scale_args(args: argparse.Namespace) -> dict[str, Any]:
    """The CLI flags as ``ScaleConfig`` fields."""
    autoscaled = args.min_replicas is not None or args.max_replicas is not None
    if autoscaled and args.replicas is not None:
        raise ValueError("give either --replicas or --min-replicas/--max-replicas, not both")
    values: dict[str, Any] = {
        "model_dir": args.model_dir,
        "num_cpus": args.num_cpus,
        "num_gpus": args.num_gpus if args.num_gpus is not None else _default_gpus(),
        "max_ongoing_requests": args.max_ongoing_requests,
        "max_queued_requests": args.max_queued_requests,
        "target_backlog_s": args.target_backlog_s,
    }
    if autoscaled:
        values["min_replicas"] = args.min_replicas if args.min_replicas is not None else 1
        values["max_replicas"] = args.max_replicas if args.max_replicas is not None else max(1, values["min_replicas"])
    else:
        values["replicas"] = args.replicas if args.replicas is not None else 1
    return values


def run(args: argparse.Namespace) -> int:
    from ..server.cli import configure_logging
    from ..settings import Settings

    settings = Settings.from_env(os.environ)
    configure_logging(settings.log_level)
    host = args.host or settings.host
    port = args.port or settings.port
    try:
        import ray
        from ray import serve
    except ImportError:
        log.error("ray-serve needs Ray Serve: pip install 'hf-remote-vae-toolkit[ray]'")
        return 2

    from .ray_serve import APP_NAME, CLUSTER_ENV, ScaleConfig, build_app

    try:
        config = ScaleConfig.from_args(scale_args(args))
    except ValueError as exc:
        log.error("%s", exc)
        return 2
    address = args.address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address)
        missing = sorted(k for k, v in CLUSTER_ENV.items() if os.environ.get(k) != v)
        if missing:
            log.warning("set %s on every node of the cluster (docs/scale-out.md); not set here", ", ".join(missing))
    else:
        # Ray's processes read these when they start; the local cluster's processes inherit them from us.
        for key, value in CLUSTER_ENV.items():
            os.environ.setdefault(key, value)
        ray.init(address="local", num_cpus=args.ray_num_cpus, include_dashboard=False)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        serve.start(http_options={"host": host, "port": port})
        serve.run(build_app(config), name=APP_NAME, route_prefix="/", blocking=False)
        count = (
            f"{config.min_replicas or 0}..{config.max_replicas} replicas (autoscaled)"
            if config.autoscaled
            else f"{config.replicas} replica(s)"
        )
        log.info("Ready: http://%s:%d with %s", host, port, count)
        stop.wait()
        log.info("Stopping")
    except Exception as exc:
        log.error("Ray Serve failed: %s", exc)
        return 1
    finally:
        if address:
            serve.delete(APP_NAME)  # a shared cluster keeps Serve and its other applications
        else:
            serve.shutdown()
        ray.shutdown()
    return 0
