"""A handler whose constructor fails, as a missing weights file would."""


class EndpointHandler:
    def __init__(self, path):
        raise FileNotFoundError(f"no diffusion_pytorch_model.safetensors in {path}")

    def __call__(self, data):  # pragma: no cover
        return None
