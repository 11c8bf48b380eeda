"""``hf-remote-vae serve``: run the server with uvicorn (flags override the environment)."""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import sysconfig
from pathlib import Path

__all__ = ["add_parser", "run", "configure_logging", "ENVIRONMENT_HELP"]

#: The knobs ``serve`` reads from the environment (``settings.py`` and the handlers), for ``--help``.
ENVIRONMENT_HELP = """\
environment (flags above override the first three):
  HF_MODEL_DIR            model directory: handler.py + weights (default /opt/huggingface/model)
  PORT, HOST              listening port and address (default 5000, 0.0.0.0); the port opens once the
                          model is loaded and warmed up
  HF_MODEL_ID             Hub repo to download into HF_MODEL_DIR when it is empty
                          (HF_REVISION, default main; HF_HUB_TOKEN or HF_TOKEN for a private repo)
  API_TOKEN               when set, POST needs "Authorization: Bearer <token>"
  CORS_ALLOW_ORIGINS      comma-separated origins a browser app may call from ("*": any); default off
  MAX_REQUEST_BYTES       larger bodies get 413 (default 512 MiB)
  MAX_QUEUE_SIZE          requests waiting beyond it get 429 + Retry-After (default 64)
  REQUEST_TIMEOUT_S       per-request deadline, then 504 (default 300)
  MAX_BATCH_SIZE          micro-batch size (default 8 on a GPU, 1 on a CPU)
  MAX_BATCH_DELAY_MS      how long a batch waits to fill (default 5)
  GPU_MEMORY_BUDGET_GB    admission and batching bound (default: free memory after warm-up minus a margin)
  WORKERS                 model workers (default one per visible GPU, else one)
  SHUTDOWN_GRACE_S        on SIGTERM, time to finish requests in flight (default 30)
  LOG_LEVEL               debug, info, warning, error (default info); debug also prints start-up tracebacks
  MAX_PIXELS, MAX_FRAMES, VAE_DTYPE
                          handler limits and dtype (see the handler's model card)
"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "serve",
        help="serve a model directory (handler.py + weights) over HTTP",
        description="Serve a model directory (handler.py + weights) over HTTP: POST / and /predict, "
        "GET /health and /metrics.",
        epilog=ENVIRONMENT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model-dir", help="directory with handler.py and the weights (env HF_MODEL_DIR)")
    p.add_argument("--port", type=int, help="listening port (env PORT, default 5000)")
    p.add_argument("--host", help="listening address (env HOST, default 0.0.0.0)")
    p.add_argument("--debug", action="store_true", help="log at debug level, with tracebacks (env LOG_LEVEL=debug)")
    p.add_argument(
        "--http",
        choices=("auto", "h11", "httptools"),
        default="auto",
        help="HTTP/1.1 parser (default auto: httptools when installed, else h11)",
    )
    p.set_defaults(func=run)


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s | %(levelname)s | %(name)s | %(message)s", stream=sys.stderr
    )


_FRAME = re.compile(r'^\s*File "(?P<path>.+)", line \d+, in ')
_PACKAGE_DIR = str(Path(__file__).resolve().parents[1])


def _is_users_code(path: str) -> bool:
    """A frame in the model's handler.py (or other code of the user's), not this package, a library or Python."""
    resolved = str(Path(path).resolve())
    library_dirs = {sysconfig.get_paths()[k] for k in ("stdlib", "purelib", "platlib")}
    return not resolved.startswith((_PACKAGE_DIR, *library_dirs)) and "site-packages" not in resolved


def shorten_traceback(text: str) -> str | None:
    """A start-up traceback -> the frame of the user's code that raised, with its exception line; None if
    the traceback has no such frame (then the "To fix:" line above says everything)."""
    lines = text.rstrip().splitlines()
    user = [i for i, line in enumerate(lines) if (m := _FRAME.match(line)) and _is_users_code(m["path"])]
    if not user:
        return None
    start = user[-1]
    end = next((j for j in range(start + 1, len(lines)) if lines[j] and not lines[j][0].isspace()), len(lines) - 1)
    frame = [line for line in lines[start:end] if line.strip() and not set(line.strip()) <= set("^~")]
    return "\n".join(
        [
            "Traceback (most recent call last), the frame in your code only (--debug shows all of it):",
            *frame,
            lines[end],
        ]
    )


class _ShortTraceback(logging.Filter):
    """Below debug level, a failed start-up shows our "To fix:" line, not 25-60 lines of traceback.

    uvicorn logs a lifespan failure's traceback as the text of one record: it is cut to the frame of the
    user's handler code that raised (nothing when the failure is not in their code). Tracebacks attached
    to records (``exc_info``) are left off.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        record.exc_info = None
        record.exc_text = None
        if isinstance(record.msg, str) and record.msg.startswith("Traceback (most recent call last):"):
            short = shorten_traceback(record.getMessage())
            if short is None:
                return False
            record.msg, record.args = short, ()
        return True


def run(args: argparse.Namespace) -> int:
    from ..settings import Settings
    from .app import create_app
    from .http import GracefulServer, uvicorn_config

    try:
        settings = Settings.from_env(os.environ)
    except ValueError as exc:  # a malformed environment variable: the message names it
        print(f"serve: {exc}", file=sys.stderr)
        return 2
    overrides = {"model_dir": args.model_dir, "port": args.port, "host": args.host}
    if getattr(args, "debug", False):
        overrides["log_level"] = "debug"
    settings = settings.replace(**{k: v for k, v in overrides.items() if v is not None})
    configure_logging(settings.log_level)
    app = create_app(settings)
    config = uvicorn_config(
        app,
        http=getattr(args, "http", "auto"),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        timeout_graceful_shutdown=int(settings.shutdown_grace_s),
    )
    quiet = settings.log_level != "debug"
    if quiet:  # after uvicorn.Config, which configures uvicorn's loggers
        for name in ("uvicorn.error", "hf_remote_vae_toolkit"):
            logging.getLogger(name).addFilter(_ShortTraceback())
    server = GracefulServer(config, drain=app.state.drain)  # SIGTERM: drain, then exit 0
    try:
        server.run()
    finally:  # uvicorn exits (SystemExit 3) itself when the start-up fails
        if not server.started:
            hint = " (--debug or LOG_LEVEL=debug shows the whole traceback)" if quiet else ""
            logging.getLogger("hf_remote_vae_toolkit").error("Server did not start; see the error above.%s", hint)
    return 0 if server.started else 1
