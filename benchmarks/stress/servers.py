"""Servers under test and the local references their answers are checked against.

Every server is a real ``hf-remote-vae serve`` child process (``serving_process``) on loopback, serving a
model repo with tiny random weights made by ``init_repo`` (the path a user takes), with either HTTP parser.
The references are the same weights decoded (encoded) in this process by diffusers' own VAE class.
"""

from __future__ import annotations

import contextlib
import io
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import torch
from PIL import Image

from hf_remote_vae_toolkit.testing import serving_process

__all__ = ["Server", "serve", "rss_bytes", "parsers", "Reference", "toy_repo"]


def parsers() -> list[str]:
    """The HTTP parsers uvicorn may pick here: h11 always, httptools when installed."""
    out = ["h11"]
    try:
        import httptools  # noqa: F401

        out.append("httptools")
    except ImportError:
        pass
    return out


@dataclass
class Server:
    url: str
    proc: subprocess.Popen[str]
    http: str

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or "127.0.0.1"

    @property
    def port(self) -> int:
        return int(urlsplit(self.url).port or 80)

    @property
    def log_path(self) -> str:
        return str(self.proc.log_path)  # type: ignore[attr-defined]

    def log_text(self) -> str:
        return Path(self.log_path).read_text(errors="replace")

    def rss(self) -> int:
        return rss_bytes(self.proc.pid)

    def terminate_and_wait(self, timeout: float = 60.0) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


@contextlib.contextmanager
def serve(repo: Path, http: str, env: Mapping[str, str] | None = None) -> Iterator[Server]:
    """A server process for ``repo`` with parser ``http``; ``env`` adds settings (``MAX_QUEUE_SIZE``, ...)."""
    full = {"LOG_LEVEL": "warning", "OMP_NUM_THREADS": "1", **(env or {})}
    with serving_process(repo, full, http=http, timeout=180) as (url, proc):
        yield Server(url, proc, http)


def toy_repo(out: Path) -> Path:
    """A model repo whose handler misbehaves on request (``?do=exit|interrupt|sleep&s=...``): for the
    worker-fault checks (SystemExit, KeyboardInterrupt, a stuck worker)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "handler.py").write_text(
        """import time


class EndpointHandler:
    def __init__(self, path=""):
        pass

    def __call__(self, data):
        params = data.get("parameters") or {}
        what = params.get("do")
        if what == "exit":
            raise SystemExit(3)
        if what == "interrupt":
            raise KeyboardInterrupt
        if what == "sleep":
            time.sleep(float(params.get("s", 1)))
        return {"ok": True, "inputs": data.get("inputs")}
"""
    )
    return out


class Reference:
    """Local decodes/encodes with the repo's weights (diffusers, float32, CPU), for checking answers."""

    def __init__(self, decode_repo: Path, encode_repo: Path | None = None) -> None:
        from hf_remote_vae_toolkit.vae.families import get_family

        family = get_family("sd-v1")
        cls = family.vae_class()
        torch.set_num_threads(1)
        self.vae = cls.from_pretrained(str(decode_repo), torch_dtype=torch.float32).eval()
        self.scaling = float(self.vae.config.scaling_factor)
        self.enc = cls.from_pretrained(str(encode_repo), torch_dtype=torch.float32).eval() if encode_repo else None
        self._raw: dict[int, torch.Tensor] = {}

    def raw(self, key: int, latents: torch.Tensor) -> torch.Tensor:
        """Decoder output in [-1, 1] for ``latents`` (sent without scaling parameters: decoded as they are)."""
        if key not in self._raw:
            with torch.inference_mode():
                self._raw[key] = self.vae.decode(latents).sample.float()
        return self._raw[key]

    def uint8(self, key: int, latents: torch.Tensor) -> np.ndarray:
        """``[B, H, W, 3]`` uint8, as diffusers' postprocess rounds it."""
        x = (self.raw(key, latents) / 2 + 0.5).clamp(0, 1)
        return (x.permute(0, 2, 3, 1) * 255).round().to(torch.uint8).numpy()

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """Latents (the mode, no scaling) of ``pixels`` ``[1, 3, H, W]`` in [-1, 1]."""
        assert self.enc is not None
        with torch.inference_mode():
            return self.enc.encode(pixels).latent_dist.mode()


def image_pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def wait_exit(proc: subprocess.Popen[Any], timeout: float) -> int | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        code = proc.poll()
        if code is not None:
            return code
        time.sleep(0.05)
    return None


def env_with(**values: Any) -> dict[str, str]:
    return {k: str(v) for k, v in values.items() if v is not None} | {"PYTHONUNBUFFERED": "1"}
