"""Inference Endpoints handler: TAESD decode, a VAE family the toolkit does not ship.

TAESD (madebyollin/taesd) is a tiny distilled decoder for Stable Diffusion latents; diffusers loads it
as ``AutoencoderTiny``. It reads the same ``[B, 4, h, w]`` latents as the SD v1 VAE (already
multiplied by 0.18215, as a pipeline leaves them: its own ``scaling_factor`` is 1.0) and returns
``[B, 3, 8h, 8w]`` in about [-1, 1], so everything after loading is the shared image decode path.

What this file adds to the toolkit's shared pieces (docs/writing-handlers.md walks through it):

1. a ``Family``: which diffusers class, the latent channels and scaling, the GPU dtype, and a tiny
   random-weights config for tests;
2. a memory estimate for this decoder, which is far lighter than the KL decoder the shared estimate
   is calibrated on;
3. no tiled decode: ``AutoencoderTiny`` has no ``tiled_decode``, and needs too little memory to want one.
"""

from __future__ import annotations

from typing import Any

from hf_remote_vae_toolkit.vae.decode import DecodeJob, run_decode
from hf_remote_vae_toolkit.vae.families import Family
from hf_remote_vae_toolkit.vae.image import ImageDecodeHandler

TAESD = Family(
    name="taesd",
    class_name="AutoencoderTiny",
    latent_channels=4,
    scaling_factor=1.0,  # the weights' config.json says the same; do_scaling=true is then a no-op
    shift_factor=None,
    cuda_dtype="float16",
    hub_id="madebyollin/taesd",
    subfolder=None,
    full_config={},  # AutoencoderTiny's defaults are TAESD's architecture
    # same latent channels and 8x up-sampling (four decoder stages), 8 channels instead of 64: CPU-fast
    tiny_config={
        "encoder_block_out_channels": [8, 8, 8, 8],
        "decoder_block_out_channels": [8, 8, 8, 8],
        "num_encoder_blocks": [1, 1, 1, 1],
        "num_decoder_blocks": [1, 1, 1, 1],
    },
)

#: Peak activation bytes per output pixel, per byte of element size. Not measured: an upper bound from the
#: architecture (the last 64-channel stage runs at full resolution with about five such tensors alive: the
#: block input, three conv outputs, the skip), against 1220 measured for the KL decoder. Measure on your
#: GPU and replace it (docs/writing-handlers.md, "Memory").
BYTES_PER_PIXEL_PER_ITEM = 5 * 64


class EndpointHandler(ImageDecodeHandler):
    """Latents ``[B, 4, h, w]`` -> images ``8h x 8w``; same parameters and outputs as sd-v1-decode."""

    family = TAESD  # a registered name ("sd-v1") or a Family object

    def estimate_memory(self, job: DecodeJob) -> int:
        b, _, h, w = job.shape
        f = TAESD.spatial_factor
        return int(BYTES_PER_PIXEL_PER_ITEM * self.itemsize * b * (h * f) * (w * f))

    def call_batch(self, jobs: list[DecodeJob]) -> list[Any]:
        return run_decode(jobs, self.loaded, tiled=False)
