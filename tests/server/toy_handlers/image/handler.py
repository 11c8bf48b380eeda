"""Returns a PIL image whose size comes from the parameters (served as PNG/JPEG by Accept)."""

from PIL import Image


class EndpointHandler:
    def __init__(self, path):
        pass

    def __call__(self, data):
        params = data.get("parameters") or {}
        size = (int(params.get("width", 32)), int(params.get("height", 16)))
        return Image.new("RGB", size, (255, 0, 0))
