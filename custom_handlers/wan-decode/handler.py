"""Inference Endpoints handler: decode wan video latents (see README.md)."""

from hf_remote_vae_toolkit.vae.video import VideoDecodeHandler


class EndpointHandler(VideoDecodeHandler):
    family = "wan"
