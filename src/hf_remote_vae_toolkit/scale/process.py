"""``hf-remote-vae ray-serve`` as a child process, for tests, benchmarks and demos (no Ray import here)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from ..testing import free_port

__all__ = ["ray_serve_process", "descendants", "replica_pids"]


@contextlib.contextmanager
def ray_serve_process(
    model_dir: str | os.PathLike[str],
    args: Sequence[str] = (),
    *,
    timeout: float = 180.0,
    env: dict[str, str] | None = None,
) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """Run ``hf-remote-vae ray-serve --model-dir DIR ARGS`` on a free loopback port with its own local
    Ray cluster; yield (base URL, process) once it logs "Ready". Stopped with SIGTERM on exit (the
    command shuts Serve and its Ray cluster down). Its output is in ``proc.log_path``."""
    port = free_port()
    log = tempfile.NamedTemporaryFile("w+", prefix="hf-remote-vae-ray-", suffix=".log", delete=False)
    full_env = {**os.environ, **(env or {})}
    full_env.pop("RAY_ADDRESS", None)
    cmd = [sys.executable, "-m", "hf_remote_vae_toolkit", "ray-serve", "--model-dir", os.fspath(Path(model_dir))]
    cmd += ["--host", "127.0.0.1", "--port", str(port), *args]
    proc = subprocess.Popen(cmd, env=full_env, stdout=log, stderr=subprocess.STDOUT, text=True)
    proc.log_path = log.name  # type: ignore[attr-defined]
    log.close()
    try:
        deadline = time.monotonic() + timeout
        while "Ready: http://" not in Path(log.name).read_text(errors="replace"):
            if proc.poll() is not None:
                raise RuntimeError(f"ray-serve exited with {proc.returncode}:\n{Path(log.name).read_text()[-4000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"ray-serve was not ready within {timeout} s:\n{Path(log.name).read_text()[-4000:]}")
            time.sleep(0.2)
        yield f"http://127.0.0.1:{port}", proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def replica_pids(pid: int) -> list[int]:
    """The Serve replica processes below ``pid`` (a ray-serve process)."""
    pids = []
    for child in descendants(pid):
        try:
            with open(f"/proc/{child}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            continue
        if b"ServeReplica:" in cmdline:
            pids.append(child)
    return pids
