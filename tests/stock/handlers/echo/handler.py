"""The simplest stock handler: hands back the data dict it was given, unchanged."""

from typing import Any


class EndpointHandler:
    def __init__(self, path: str = "") -> None:
        self.path = path

    def __call__(self, data: dict[str, Any]) -> Any:
        return data
