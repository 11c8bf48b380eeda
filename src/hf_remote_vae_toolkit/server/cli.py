"""``hf-remote-vae serve``: run the server with uvicorn (flags override the environment)."""

from __future__ import annotations

import argparse
import logging
import os
import sys

__all__ = ["add_parser", "run", "configure_logging"]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("serve", help="serve a model directory (handler.py + weights) over HTTP")
    p.add_argument("--model-dir", help="directory with handler.py and the weights (env HF_MODEL_DIR)")
    p.add_argument("--port", type=int, help="listening port (env PORT, default 5000)")
    p.add_argument("--host", help="listening address (env HOST, default 0.0.0.0)")
    p.set_defaults(func=run)


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s | %(levelname)s | %(name)s | %(message)s", stream=sys.stderr
    )


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from ..settings import Settings
    from .app import create_app

    settings = Settings.from_env(os.environ)
    overrides = {"model_dir": args.model_dir, "port": args.port, "host": args.host}
    settings = settings.replace(**{k: v for k, v in overrides.items() if v is not None})
    configure_logging(settings.log_level)
    config = uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        lifespan="on",
        access_log=False,  # we log one line per request ourselves
        timeout_graceful_shutdown=int(settings.shutdown_grace_s),
    )
    server = uvicorn.Server(config)
    server.run()
    if not server.started:
        logging.getLogger("hf_remote_vae_toolkit").error("Server did not start; see the error above.")
        return 1
    return 0
