"""Inference Endpoints handler: preview decode of SD v1 latents with TAESD (madebyollin/taesd).

Everything is in ``hf_remote_vae_toolkit.vae.preview`` (shared by the three preview decoders): the request's
scaling is mapped onto this decoder's latent space, so a request means here what it means to the full endpoint.
"""

from hf_remote_vae_toolkit.vae.preview import BYTES_PER_PIXEL_PER_ITEM, PreviewDecodeHandler

__all__ = ["EndpointHandler", "BYTES_PER_PIXEL_PER_ITEM"]


class EndpointHandler(PreviewDecodeHandler):
    """Latents ``[B, 4, h, w]`` -> images ``8h x 8w``; the parameters and outputs of sd-v1-decode."""

    family = "taesd"
