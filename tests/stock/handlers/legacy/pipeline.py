"""The legacy handler form: pipeline.py defining PreTrainedPipeline(path), called with the data dict."""

from typing import Any

from custom_utils import reverse


class PreTrainedPipeline:
    def __init__(self, path: str) -> None:
        self.path = path

    def __call__(self, data: dict[str, Any]) -> Any:
        inputs = data["inputs"]
        return {"reversed": reverse(inputs) if isinstance(inputs, str) else None, "keys": list(data)}
