"""Generate the next latents while earlier ones decode remotely.

The workflow the remote-VAE blog post showed: the local GPU runs only the denoiser
(``output_type="latent"``), and each finished latent goes to the remote VAE while the next one
is being denoised. ``decode_many`` consumes the generator below lazily, so denoising item
``i + 1`` overlaps the HTTP decode of item ``i``.

Run it as is to try it on a CPU: without ``--endpoint`` it builds a tiny random SD v1 pipeline
from configs and serves a tiny random SD v1 VAE on loopback (no downloads, noise images)::

    python examples/pipeline_overlap.py -n 4 -o out/

With a real pipeline, replace ``tiny_pipeline()`` by ``StableDiffusionPipeline.from_pretrained(...)``
and pass your endpoint's URL.
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import torch
from diffusers import DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel

from hf_remote_vae_toolkit.client import decode_many

EMBED_DIM = 16  # the tiny UNet's cross-attention width


def tiny_pipeline() -> StableDiffusionPipeline:
    """A random SD v1-shaped pipeline without VAE, text encoder or tokenizer (prompts come as embeddings)."""
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=(8, 16), layers_per_block=1,
        norm_num_groups=4, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=EMBED_DIM, attention_head_dim=2,
    )  # fmt: skip
    return StableDiffusionPipeline(
        vae=None, text_encoder=None, tokenizer=None, unet=unet, scheduler=DDIMScheduler(),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )  # fmt: skip


def generate_latents(pipe: StableDiffusionPipeline, n: int, size: int) -> Iterator[torch.Tensor]:
    """Yield ``n`` latents ``[1, 4, size/8, size/8]``, still normalised (divide by scaling_factor to decode)."""
    for i in range(n):
        embeds = torch.randn(1, 4, EMBED_DIM, generator=torch.Generator().manual_seed(i))
        with torch.no_grad():
            latents = pipe(
                prompt_embeds=embeds, negative_prompt_embeds=torch.zeros_like(embeds), height=size, width=size,
                num_inference_steps=2, output_type="latent", generator=torch.Generator().manual_seed(i),
            ).images  # fmt: skip
        print(f"latents {i} ready at {time.perf_counter() - START:.2f} s", flush=True)
        yield latents


@contextlib.contextmanager
def local_endpoint() -> Iterator[str]:
    """A tiny random SD v1 decode server on loopback, for trying the workflow without a GPU."""
    from hf_remote_vae_toolkit.testing import running_server
    from hf_remote_vae_toolkit.vae.repo import init_repo

    with tempfile.TemporaryDirectory() as tmp:
        with running_server(init_repo("sd-v1-decode", Path(tmp) / "repo", random_weights="tiny")) as url:
            yield url


def main(argv: list[str] | None = None) -> list[Path]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoint", help="remote VAE URL (default: a tiny local one)")
    parser.add_argument("-n", type=int, default=4, help="how many images")
    parser.add_argument("--size", type=int, default=64, help="image size in pixels")
    parser.add_argument("-o", "--output", type=Path, default=Path("overlap-out"))
    args = parser.parse_args(argv)
    pipe = tiny_pipeline()
    with contextlib.ExitStack() as stack:
        endpoint = args.endpoint or stack.enter_context(local_endpoint())
        images = decode_many(
            endpoint, generate_latents(pipe, args.n, args.size), concurrency=2, scaling_factor=0.18215, timeout=120
        )
    args.output.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, image in enumerate(images):
        paths.append(args.output / f"{i}.jpg")
        image.save(paths[-1])
    print(f"{len(paths)} images in {args.output} after {time.perf_counter() - START:.2f} s")
    return paths


START = time.perf_counter()

if __name__ == "__main__":
    main()
