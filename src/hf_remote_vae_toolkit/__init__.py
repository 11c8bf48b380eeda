"""hf-remote-vae-toolkit: a remote VAE server, its handlers, a client and a CLI."""

__version__ = "0.1.0"
