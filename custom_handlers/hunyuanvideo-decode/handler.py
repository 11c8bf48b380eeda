"""Inference Endpoints handler: decode hunyuanvideo video latents (see README.md)."""

from hf_remote_vae_toolkit.vae.video import VideoDecodeHandler


class EndpointHandler(VideoDecodeHandler):
    family = "hunyuanvideo"
