"""`make demo`: serve an SD v1 decode endpoint on loopback and decode a latent through it.

Steps, all local (no network, no GPU needed):
1. ``init-repo sd-v1-decode --random-weights tiny`` into a temp dir: the handler plus a small VAE of
   the real class and latent layout, with random weights;
2. start the real server on a free loopback port;
3. decode a random 1x4x64x64 latent with diffusers' own ``remote_decode`` and with ours, both warmed
   up first and then timed in alternation (the first call of a process pays for connection set-up
   and lazy imports; timing one client cold and the other warm would compare those, not the clients);
4. write ``demo-out/decoded.png`` and print the timings and the commands to run next.

Random weights decode to noise: the point is the path, not the picture.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch


def _timed(call: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    result = call()
    return time.perf_counter() - t0, result


def command_prefix() -> tuple[str | None, str]:
    """(the line that puts this venv's commands on PATH, or None when they already are; the prefix to
    call them by until then)."""
    bin_dir = Path(sys.executable).parent
    on_path = shutil.which("hf-remote-vae")
    if on_path and Path(on_path).parent.resolve() == bin_dir.resolve():
        return None, ""
    rel = os.path.relpath(bin_dir)
    rel = rel if not rel.startswith("..") else str(bin_dir)
    return f"source {rel}/activate", f"{rel}/"


def next_steps() -> list[str]:
    activate, prefix = command_prefix()
    lines = []
    if activate:
        lines += [
            "The hf-remote-vae command lives in the project's virtualenv. Put it on your PATH (once per shell):",
            f"  {activate}",
            f"(or call it as {prefix}hf-remote-vae). Then:",
        ]
    lines += [
        "  hf-remote-vae init-repo sd-v1-decode --out ./sd-v1-tiny --random-weights tiny   # no download",
        "  hf-remote-vae serve --model-dir ./sd-v1-tiny --port 5000                        # Ctrl-C stops it",
        "For real images, the real weights (needs access to the Hugging Face Hub, 330 MB):",
        "  hf-remote-vae init-repo sd-v1-decode --out ./sd-v1-decode --weights stabilityai/sd-vae-ft-mse",
        "  hf-remote-vae serve --model-dir ./sd-v1-decode --port 5000",
        "Then decode from Python (README.md), the command line or curl (docs/endpoints.md).",
    ]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="demo-out", help="where to write decoded.png (default demo-out)")
    parser.add_argument("--size", type=int, default=512, help="image side in pixels, a multiple of 8 (default 512)")
    parser.add_argument("--rounds", type=int, default=5, help="timed calls per client, alternating (default 5)")
    args = parser.parse_args(argv)

    from diffusers.utils.remote_utils import remote_decode as diffusers_remote_decode

    from hf_remote_vae_toolkit.client import remote_decode
    from hf_remote_vae_toolkit.testing import running_server
    from hf_remote_vae_toolkit.vae.repo import init_repo

    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="hf-remote-vae-demo-") as tmp:
        t_repo, repo = _timed(lambda: init_repo("sd-v1-decode", Path(tmp) / "sd-v1-decode", random_weights="tiny"))
        t0 = time.perf_counter()
        with running_server(repo) as url:
            t_start = time.perf_counter() - t0
            side = args.size // 8
            latents = torch.randn(1, 4, side, side, generator=torch.Generator().manual_seed(0))
            kwargs: dict[str, Any] = {"scaling_factor": 0.18215, "image_format": "png"}
            clients: dict[str, Callable[[], Any]] = {
                "diffusers remote_decode": lambda: diffusers_remote_decode(url, latents, **kwargs),
                "hf_remote_vae_toolkit client": lambda: remote_decode(url, latents, **kwargs, timeout=60),
            }
            images = {name: call() for name, call in clients.items()}  # warm-up: imports, first connection
            times: dict[str, list[float]] = {name: [] for name in clients}
            for i in range(args.rounds):
                order = list(clients) if i % 2 == 0 else list(reversed(clients))
                for name in order:
                    times[name].append(_timed(clients[name])[0])
        image = images["diffusers remote_decode"]
        target = out_dir / "decoded.png"
        image.save(target)

    same = all(np.array_equal(np.asarray(image), np.asarray(other)) for other in images.values())
    print(f"model repo (tiny random SD v1 VAE) written in {t_repo * 1000:.0f} ms")
    print(f"server started and warmed up on {url} in {t_start * 1000:.0f} ms")
    print(f"decode {list(latents.shape)} -> {image.size[0]}x{image.size[1]} PNG, same pixels from every client: {same}")
    print(f"median of {args.rounds} warm calls each, taken in alternation (the server's decode is most of it):")
    for name, values in times.items():
        print(f"  {name:<30} {statistics.median(values) * 1000:7.1f} ms")
    print(f"wrote {target}")
    print()
    print("That image is noise: the VAE has random weights, so only the path is real.")
    for line in next_steps():
        print(line)
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
