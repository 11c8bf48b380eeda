"""Inference Endpoints handler: flux VAE decode. All the work is in hf_remote_vae_toolkit.vae.image."""

from hf_remote_vae_toolkit.vae.image import ImageDecodeHandler


class EndpointHandler(ImageDecodeHandler):
    family = "flux"
