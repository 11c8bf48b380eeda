"""A stock-style handler: JSON in, JSON out, written for the Endpoints toolkit."""

from typing import Any


class EndpointHandler:
    def __init__(self, path: str = "") -> None:
        self.path = path

    def __call__(self, data: dict[str, Any]) -> Any:
        inputs = data.pop("inputs", data)
        parameters = data.pop("parameters", None) or {}
        if inputs == "boom":
            raise RuntimeError("secret internal detail")
        return {"echo": inputs, "parameters": parameters}
