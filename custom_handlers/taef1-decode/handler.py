"""Inference Endpoints handler: preview decode of FLUX.1 latents with TAEF1 (madebyollin/taef1).

The preview tier: a tiny distilled decoder (diffusers' ``AutoencoderTiny``) served beside the full
``flux-decode`` endpoint, with the same wire protocol. A request means here exactly what it means to
the full endpoint, and the answer is TAESD's quick rendering of the image the full endpoint would
return: a client sends the same latents and parameters to this endpoint while sampling and to the full
one at the end.

TAESD decodes the diffusion model's own latent space (its weights say ``scaling_factor`` 1.0), while
the full VAE decodes ``z / scaling_factor + shift_factor``. So the request's scaling is mapped onto
TAESD's space with the previewed family's factors (flux: 0.3611, shift 0.1159):

- ``scaling_factor``/``shift_factor`` equal to the family's, or ``do_scaling=true``: the latents are
  already in the diffusion model's space and are decoded as they are (what a pipeline returns with
  ``output_type="latent"``);
- no scaling (``do_scaling=false``, or nothing): the latents are in the full VAE's space (a ComfyUI
  LATENT, a pipeline's latents already divided by the factor) and become ``(z - shift) * scale``;
- other explicit factors: the full VAE's input ``z / s + t`` is computed first, then mapped the same way.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from hf_remote_vae_toolkit.vae.decode import DecodeJob, run_decode
from hf_remote_vae_toolkit.vae.families import get_family
from hf_remote_vae_toolkit.vae.image import ImageDecodeHandler
from hf_remote_vae_toolkit.vae.latents import Scaling, apply_decode_scaling

PREVIEW = "taef1"
PREVIEWS = get_family("flux")  # the full family whose latent space this decoder reads

#: Peak activation bytes per output pixel, per byte of element size: an upper bound from the architecture
#: (the last 64-channel stage runs at full resolution with about five such tensors alive), not a
#: measurement; the KL decoder's measured figure is 1220. The shared estimate (calibrated on the KL
#: decoder) would refuse requests this decoder runs easily, and it has no tiled decode to fall back on.
BYTES_PER_PIXEL_PER_ITEM = 5 * 64


def to_preview_space(job: DecodeJob) -> DecodeJob:
    """The job with its latents in TAESD's space (float32, CPU) and no scaling left to apply."""
    scale = PREVIEWS.scaling_factor or 1.0
    shift = PREVIEWS.shift_factor or 0.0
    s = job.scaling
    z = job.latents.float()
    if s.kind == "model":
        pass  # do_scaling=true: the family's own normalisation, i.e. the diffusion model's space already
    elif s.kind == "explicit" and (s.scale or 1.0) == scale and (s.shift or 0.0) == shift:
        pass  # the previewed family's factors: the same
    else:  # the full VAE's input (after the request's own factors, if any), mapped to the diffusion space
        z = (apply_decode_scaling(z, s) - shift) * scale
    return dataclasses.replace(job, latents=z, scaling=Scaling("none"))


class EndpointHandler(ImageDecodeHandler):
    """Latents ``[B, 16, h, w]`` (or packed ``[B, N, 64]`` with height/width) -> images; as flux-decode."""

    family = PREVIEW

    def parse_job(self, inputs: Any, params: Mapping[str, Any], accept: str | None) -> DecodeJob:
        return to_preview_space(super().parse_job(inputs, params, accept))  # checked, then mapped (CPU)

    def estimate_memory(self, job: DecodeJob) -> int:
        b, _, h, w = job.shape
        f = self.loaded.family.spatial_factor
        return int(BYTES_PER_PIXEL_PER_ITEM * self.itemsize * b * (h * f) * (w * f))

    def call_batch(self, jobs: list[DecodeJob]) -> list[Any]:
        return run_decode(jobs, self.loaded, tiled=False)  # AutoencoderTiny has no tiled decode
