"""The preview tier: tiny distilled decoders (diffusers' ``AutoencoderTiny``: TAESD, TAESDXL, TAEF1) served
beside the full VAE with the same wire protocol.

A request means to a preview endpoint exactly what it means to the full one, and the answer is the tiny
decoder's quick rendering of the image the full endpoint would return: a client sends the same latents and
parameters to the preview endpoint while sampling and to the full one at the end.

The tiny decoders read the diffusion model's own latent space (their weights say ``scaling_factor`` 1.0),
while the full VAE decodes ``z / scaling_factor + shift_factor``. So the request's scaling is mapped onto
the tiny decoder's space with the previewed family's factors (``PREVIEW_OF``):

- ``scaling_factor``/``shift_factor`` equal to the family's, or ``do_scaling=true``: the latents are already in
  the diffusion model's space and are decoded as they are (what a pipeline returns with ``output_type="latent"``);
- no scaling (``do_scaling=false``, or nothing): the latents are in the full VAE's space (a ComfyUI LATENT, a
  pipeline's latents already divided by the factor) and become ``(z - shift) * scale``;
- other explicit factors: the full VAE's input ``z / s + t`` is computed first, then mapped the same way.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from .decode import DecodeJob, run_decode
from .families import PREVIEW_OF, Family, get_family
from .image import ImageDecodeHandler
from .latents import Scaling, apply_decode_scaling

__all__ = ["PreviewDecodeHandler", "BYTES_PER_PIXEL_PER_ITEM", "to_preview_space"]

#: Peak activation bytes per output pixel, per byte of element size: an upper bound from the architecture
#: (the last 64-channel stage runs at full resolution with about five such tensors alive), not a
#: measurement; the KL decoder's measured figure is 1220. The shared estimate (calibrated on the KL
#: decoder) would refuse requests this decoder runs easily, and it has no tiled decode to fall back on.
BYTES_PER_PIXEL_PER_ITEM = 5 * 64


def to_preview_space(job: DecodeJob, previews: Family) -> DecodeJob:
    """The job with its latents in the tiny decoder's space (float32, CPU) and no scaling left to apply."""
    scale = previews.scaling_factor or 1.0
    shift = previews.shift_factor or 0.0
    s = job.scaling
    z = job.latents.float()
    if s.kind == "model":
        pass  # do_scaling=true: the family's own normalisation, i.e. the diffusion model's space already
    elif s.kind == "explicit" and (s.scale or 1.0) == scale and (s.shift or 0.0) == shift:
        pass  # the previewed family's factors: the same
    else:  # the full VAE's input (after the request's own factors, if any), mapped to the diffusion space
        z = (apply_decode_scaling(z, s) - shift) * scale
    return dataclasses.replace(job, latents=z, scaling=Scaling("none"))


class PreviewDecodeHandler(ImageDecodeHandler):
    """``EndpointHandler`` base of the preview decoders; a subclass sets ``family`` (``"taesd"``, ...)."""

    @property
    def previews(self) -> Family:
        """The full family whose latent space this decoder reads."""
        return get_family(PREVIEW_OF[self.loaded.family.name])

    def parse_job(self, inputs: Any, params: Mapping[str, Any], accept: str | None) -> DecodeJob:
        return to_preview_space(super().parse_job(inputs, params, accept), self.previews)  # checked, then mapped

    def estimate_memory(self, job: DecodeJob) -> int:
        b, _, h, w = job.shape
        f = self.loaded.family.spatial_factor
        return int(BYTES_PER_PIXEL_PER_ITEM * self.itemsize * b * (h * f) * (w * f))

    def call_batch(self, jobs: list[DecodeJob]) -> list[Any]:
        return run_decode(jobs, self.loaded, tiled=False)  # AutoencoderTiny has no tiled decode
