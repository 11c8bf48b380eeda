"""Inference Endpoints handler: preview decode of FLUX.1 latents with TAEF1 (madebyollin/taef1).

Everything is in ``hf_remote_vae_toolkit.vae.preview`` (shared by the three preview decoders): the request's
scaling is mapped onto this decoder's latent space, so a request means here what it means to the full endpoint.
"""

from hf_remote_vae_toolkit.vae.preview import BYTES_PER_PIXEL_PER_ITEM, PreviewDecodeHandler

__all__ = ["EndpointHandler", "BYTES_PER_PIXEL_PER_ITEM"]


class EndpointHandler(PreviewDecodeHandler):
    """Latents ``[B, 16, h, w]`` (or packed ``[B, N, 64]`` with height/width) -> images; as flux-decode."""

    family = "taef1"
