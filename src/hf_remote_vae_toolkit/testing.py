"""Helpers to run the real server in tests, demos and benchmarks.

``running_server`` serves on a free loopback port from a background thread (same process, real
uvicorn, real sockets); ``serving_process`` runs ``hf-remote-vae serve`` as a child process, for
tests of start-up, exit codes and signals.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

__all__ = ["running_server", "serving_process", "free_port", "wait_healthy", "load_endpoint_handler"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def running_server(
    model_dir: str | os.PathLike[str] | None = None,
    *,
    handler: Any = None,
    startup_timeout: float = 120.0,
    http: str = "auto",
    **overrides: Any,
) -> Iterator[str]:
    """Serve ``model_dir`` (or an already-built ``handler``) on loopback; yield the base URL.

    ``overrides`` are ``Settings`` fields (``request_timeout_s=1``, ``api_token="t"``, ...). ``http``: the
    HTTP parser (``auto``, ``h11``, ``httptools``), configured as ``hf-remote-vae serve`` configures it.
    Raises ``RuntimeError`` if the server fails to start (the handler's error is in the log).
    """
    from .server.app import create_app
    from .server.http import GracefulServer, uvicorn_config
    from .settings import Settings

    settings = Settings(model_dir=os.fspath(model_dir) if model_dir else "", host="127.0.0.1", **overrides)
    app = create_app(settings, handler=handler)
    # IPPROTO_TCP explicitly: asyncio turns Nagle's algorithm off only for sockets that say they are
    # TCP, and with it on every small response waits ~40 ms for the client's delayed ACK.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn_config(app, http=http, log_level="warning", timeout_graceful_shutdown=5)
    server = GracefulServer(config, drain=app.state.drain)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="test-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            sock.close()
            raise RuntimeError("the server did not start; the handler's error is in the log above")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


def wait_healthy(url: str, timeout: float = 120.0, proc: subprocess.Popen[Any] | None = None) -> None:
    """Poll ``url/health`` until it answers 200 (or the process exits, or time runs out)."""
    import requests

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the server exited with code {proc.returncode} before becoming healthy")
        with contextlib.suppress(requests.RequestException):
            if requests.get(f"{url}/health", timeout=1).status_code == 200:
                return
        time.sleep(0.05)
    raise TimeoutError(f"{url} did not become healthy within {timeout} s")


@contextlib.contextmanager
def serving_process(
    model_dir: str | os.PathLike[str],
    env: Mapping[str, str] | None = None,
    *,
    timeout: float = 120.0,
    http: str = "auto",
) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """``python -m hf_remote_vae_toolkit serve`` on a free port; yields (base URL, process). ``http``: the
    ``--http`` parser choice.

    The server's output goes to a temporary file whose path is ``proc.log_path`` (a pipe nobody
    reads would block a chatty server).
    """
    port = free_port()
    log = tempfile.NamedTemporaryFile("w+", prefix="hf-remote-vae-", suffix=".log", delete=False)
    full_env = {**os.environ, **(env or {}), "HF_MODEL_DIR": os.fspath(Path(model_dir)), "PORT": str(port)}
    full_env.setdefault("HOST", "127.0.0.1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "hf_remote_vae_toolkit", "serve", "--host", "127.0.0.1", "--http", http],
        env=full_env,
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )
    proc.log_path = log.name  # type: ignore[attr-defined]
    log.close()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, timeout, proc)
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def load_endpoint_handler(repo: str | os.PathLike[str], **kwargs: Any) -> Any:
    """Import ``repo/handler.py`` as the server does and build ``EndpointHandler(str(repo), **kwargs)``: a
    handler in this process, without a server (tests, notebooks, benchmarks)."""
    import importlib.util

    path = Path(repo)
    name = f"_endpoint_handler_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(name, path / "handler.py")
    if spec is None or spec.loader is None:
        raise FileNotFoundError(f"no handler.py in {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.EndpointHandler(str(path), **kwargs)
