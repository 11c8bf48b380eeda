"""Inference Endpoints handler: sd-v1 VAE encode. All the work is in hf_remote_vae_toolkit.vae.image."""

from hf_remote_vae_toolkit.vae.image import ImageEncodeHandler


class EndpointHandler(ImageEncodeHandler):
    family = "sd-v1"
