"""`make demo`: serve an SD v1 decode endpoint on loopback and decode a latent through it.

Steps, all local (no network, no GPU needed):
1. ``init-repo sd-v1-decode --random-weights tiny`` into a temp dir: the handler plus a small VAE of
   the real class and latent layout, with random weights;
2. start the real server on a free loopback port;
3. decode a random 1x4x64x64 latent with diffusers' own ``remote_decode`` and with ours;
4. write ``demo-out/decoded.png`` and print the timings.

Random weights decode to noise: the point is the path, not the picture. For real images serve the
real weights: ``HF_MODEL_ID=stabilityai/sd-vae-ft-mse HF_MODEL_DIR=./sd-vae-ft-mse hf-remote-vae serve``, or a deployable repo from
``hf-remote-vae init-repo sd-v1-decode --out DIR --weights stabilityai/sd-vae-ft-mse``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="demo-out", help="where to write decoded.png (default demo-out)")
    parser.add_argument("--size", type=int, default=512, help="image side in pixels, a multiple of 8 (default 512)")
    args = parser.parse_args(argv)

    from diffusers.utils.remote_utils import remote_decode as diffusers_remote_decode

    from hf_remote_vae_toolkit.client import remote_decode
    from hf_remote_vae_toolkit.testing import running_server
    from hf_remote_vae_toolkit.vae.repo import init_repo

    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="hf-remote-vae-demo-") as tmp:
        t0 = time.perf_counter()
        repo = init_repo("sd-v1-decode", Path(tmp) / "sd-v1-decode", random_weights="tiny")
        t_repo = time.perf_counter() - t0
        t0 = time.perf_counter()
        with running_server(repo) as url:
            t_start = time.perf_counter() - t0
            side = args.size // 8
            latents = torch.randn(1, 4, side, side, generator=torch.Generator().manual_seed(0))
            t0 = time.perf_counter()
            image = diffusers_remote_decode(url, latents, scaling_factor=0.18215, image_format="png")
            t_diffusers = time.perf_counter() - t0
            t0 = time.perf_counter()
            ours = remote_decode(url, latents, scaling_factor=0.18215, image_format="png", timeout=60)
            t_ours = time.perf_counter() - t0
        target = out_dir / "decoded.png"
        image.save(target)

    same = np.array_equal(np.asarray(image), np.asarray(ours))
    print(f"model repo (tiny random SD v1 VAE) written in {t_repo * 1000:.0f} ms")
    print(f"server started and warmed up on {url} in {t_start * 1000:.0f} ms")
    print(f"decode {list(latents.shape)} -> {image.size[0]}x{image.size[1]} PNG")
    print(f"  diffusers remote_decode:      {t_diffusers * 1000:7.1f} ms")
    print(f"  hf_remote_vae_toolkit client: {t_ours * 1000:7.1f} ms (same pixels: {same})")
    print(f"wrote {target}")
    print()
    print("That image is noise: the VAE has random weights, so only the path is real.")
    print("To decode real images, serve the real weights (needs access to the Hugging Face Hub):")
    print("  HF_MODEL_ID=stabilityai/sd-vae-ft-mse HF_MODEL_DIR=./sd-vae-ft-mse hf-remote-vae serve")
    print("or make a deployable repo (handler + weights) to push to the Hub or point HF_MODEL_DIR at:")
    print("  hf-remote-vae init-repo sd-v1-decode --out ./sd-v1-decode --weights stabilityai/sd-vae-ft-mse")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
