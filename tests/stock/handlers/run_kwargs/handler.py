"""A stock handler that spreads the data dict into keyword arguments.

It works on the stock toolkit only because ``data`` holds exactly ``inputs`` (and ``parameters``
when the request has some): one extra key is a ``TypeError``.
"""

from typing import Any


class EndpointHandler:
    def __init__(self, path: str = "") -> None:
        self.path = path

    def __call__(self, data: dict[str, Any]) -> Any:
        return self.run(**data)

    def run(self, inputs: Any, parameters: dict[str, Any] | None = None) -> Any:
        if isinstance(inputs, (bytes, bytearray)):
            inputs = {"bytes": len(inputs)}
        elif not isinstance(inputs, (str, int, float, bool, list, dict, type(None))):
            inputs = type(inputs).__name__
        return {"inputs": inputs, "parameters": parameters}
