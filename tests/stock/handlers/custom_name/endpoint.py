"""A handler file under another name, found through HF_DEFAULT_PIPELINE_NAME=endpoint.py."""

from typing import Any


class EndpointHandler:
    def __init__(self, path: str = "") -> None:
        self.path = path

    def __call__(self, data: dict[str, Any]) -> Any:
        return {"file": "endpoint.py", "data": data}
