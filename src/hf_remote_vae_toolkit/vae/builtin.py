"""The shipped handlers by name, for a model directory that has weights but no ``handler.py``.

``HF_MODEL_ID=stabilityai/sd-vae-ft-mse`` downloads a plain diffusers VAE repo: config.json and
weights, no handler. The server then serves the handler named by ``HF_TASK`` (``sd-v1-decode``,
``flux-encode``, ...) or, without ``HF_TASK``, the decode handler of the family its config.json
describes. ``custom_handlers/<name>/handler.py`` is the same class, for repos you deploy yourself.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .families import FAMILIES, PREVIEW_OF, Family
from .repo import family_for_handler

__all__ = ["BUILTIN_HANDLERS", "builtin_handler_class", "detect_handler_name"]

_OPERATIONS = ("decode", "encode")

#: Every name ``builtin_handler_class`` accepts (video families decode only).
#: Preview families (TAESD) are not built in: their handlers live in custom_handlers/<name>-decode.
BUILTIN_HANDLERS = tuple(
    f"{fam.name}-{op}"
    for fam in FAMILIES.values()
    if fam.name not in PREVIEW_OF
    for op in _OPERATIONS
    if op == "decode" or not fam.video
)


def builtin_handler_class(name: str) -> type:
    """``"sd-v1-decode"`` -> an ``EndpointHandler`` class for that family and operation."""
    try:
        family = family_for_handler(name.strip().lower())
    except ValueError:
        raise ValueError(f"unknown handler {name!r}; expected one of {list(BUILTIN_HANDLERS)}") from None
    if family.name in PREVIEW_OF:
        raise ValueError(f"{family.name} is served by custom_handlers/{family.name}-decode, not built in")
    operation = name.strip().lower().rpartition("-")[2]
    base: Any
    if family.video:
        if operation == "encode":
            raise ValueError(f"{family.name} is served for decode only; expected one of {list(BUILTIN_HANDLERS)}")
        from .video import VideoDecodeHandler as base
    elif operation == "decode":
        from .image import ImageDecodeHandler as base
    else:
        from .image import ImageEncodeHandler as base
    return type("EndpointHandler", (base,), {"family": family.name, "__module__": __name__})


def _family_from_config(config: dict[str, Any]) -> Family | None:
    by_class = {
        fam.class_name: fam
        for fam in FAMILIES.values()
        if fam.class_name != "AutoencoderKL" and fam.name not in PREVIEW_OF
    }
    class_name = config.get("_class_name")
    if class_name in by_class:
        return by_class[class_name]
    if class_name != "AutoencoderKL":
        return None
    if config.get("latent_channels") == 16:
        return FAMILIES["flux"]
    if config.get("scaling_factor") == FAMILIES["sdxl"].scaling_factor:
        return FAMILIES["sdxl"]
    return FAMILIES["sd-v1"]


def detect_handler_name(model_dir: str | Path) -> str | None:
    """The decode handler for the VAE whose config.json is in ``model_dir`` (or its ``vae/``)."""
    for candidate in (Path(model_dir), Path(model_dir) / "vae"):
        config_file = candidate / "config.json"
        if not config_file.is_file():
            continue
        try:
            config = json.loads(config_file.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue
        family = _family_from_config(config) if isinstance(config, dict) else None
        if family is not None:
            return f"{family.name}-decode"
    return None
