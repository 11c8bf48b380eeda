"""Inference Endpoints handler: flux VAE encode. All the work is in hf_remote_vae_toolkit.vae.image."""

from hf_remote_vae_toolkit.vae.image import ImageEncodeHandler


class EndpointHandler(ImageEncodeHandler):
    family = "flux"
