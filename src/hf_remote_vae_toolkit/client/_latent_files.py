"""Read saved latents: safetensors, torch ``.pt`` and ComfyUI's ``.latent``, for ``hf-remote-vae decode``.

The recovery path after a local out-of-memory: the denoising finished, the local VAE decode did not,
and the latents were saved. Which space the numbers are in decides how the server must scale them:

- ``"pipeline"``: as a diffusers pipeline returns them with ``output_type="latent"`` (still
  normalised: the server applies the model's scaling). Safetensors and ``.pt`` files of plain tensors.
- ``"vae"``: already in the VAE's own latent space, decoded with no scaling. ComfyUI keeps a LATENT's
  ``samples`` there (its samplers undo the model's latent format before handing the latent on), so its
  ``.latent`` files (safetensors with ``latent_tensor`` and the ``latent_format_version_0`` marker; a
  file without the marker is from before the marker and holds SD v1 samples times 0.18215, which ComfyUI
  divides out when loading, and so do we) and a ``torch.save``-d LATENT dict (``{"samples": ...}``)
  are ``"vae"``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

__all__ = ["LatentFile", "load_latent_file", "LATENT_SUFFIXES"]

_SAFETENSORS = (".safetensors", ".sft", ".latent")
_TORCH = (".pt", ".pth", ".bin", ".ckpt")
LATENT_SUFFIXES = (*_SAFETENSORS, *_TORCH)

#: ComfyUI's legacy .latent files (no version marker) hold samples times SD v1's factor.
_COMFY_LEGACY_SCALE = 0.18215
_FLOATS = (torch.float16, torch.bfloat16, torch.float32)


@dataclass(frozen=True)
class LatentFile:
    """Tensors of one file by name, the space they are in (``"pipeline"`` | ``"vae"``), and the format read."""

    path: Path
    tensors: dict[str, torch.Tensor]
    space: str
    format: str  # "safetensors" | "torch" | "comfyui"


def _float(name: str, path: Path, value: torch.Tensor) -> torch.Tensor:
    if value.dtype == torch.float64:
        return value.float()
    if value.dtype not in _FLOATS:
        raise ValueError(f"{path}: tensor {name!r} is {value.dtype}; latents are float16, bfloat16 or float32")
    return value


def _comfyui(path: Path, tensors: dict[str, Any]) -> LatentFile:
    samples = tensors["latent_tensor"]
    if not isinstance(samples, torch.Tensor):
        raise ValueError(f"{path}: latent_tensor is a {type(samples).__name__}, not a tensor")
    samples = samples.float()  # what ComfyUI's Load Latent does
    if "latent_format_version_0" not in tensors:
        samples = samples / _COMFY_LEGACY_SCALE
    return LatentFile(path, {"samples": samples}, "vae", "comfyui")


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(path)
    except (SafetensorError, OSError) as exc:
        raise ValueError(f"{path}: not a readable safetensors file ({exc})") from None


def _read_torch(path: Path) -> Any:
    import pickle

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "global" not in str(exc).lower():  # not a class it refuses: a file that is no torch pickle at all
            raise ValueError(f"{path}: not a readable torch file (UnpicklingError)") from None
        raise ValueError(
            f"{path}: holds objects that torch.load(weights_only=True) refuses to unpickle (a pipeline output, "
            "a class); "
            "save the latent tensor itself: torch.save(latents, path) or torch.save({'latents': latents}, path)"
        ) from None
    except Exception as exc:  # torch.load raises KeyError, RuntimeError, EOFError... on a file that is not its own
        raise ValueError(f"{path}: not a readable torch file ({type(exc).__name__}: {exc})") from None


def _from_object(path: Path, obj: Any) -> LatentFile:
    if isinstance(obj, torch.Tensor):
        return LatentFile(path, {"latents": _float("latents", path, obj)}, "pipeline", "torch")
    if isinstance(obj, dict):
        if "latent_tensor" in obj:
            return _comfyui(path, obj)
        if isinstance(obj.get("samples"), torch.Tensor):  # a ComfyUI LATENT dict, torch.save-d
            return LatentFile(path, {"samples": _float("samples", path, obj["samples"])}, "vae", "torch")
        tensors = {str(k): _float(str(k), path, v) for k, v in obj.items() if isinstance(v, torch.Tensor)}
        if tensors:
            return LatentFile(path, tensors, "pipeline", "torch")
        raise ValueError(f"{path}: the saved dict holds no tensors (keys: {sorted(map(str, obj))})")
    if isinstance(obj, (list, tuple)) and obj and all(isinstance(v, torch.Tensor) for v in obj):
        return LatentFile(path, {str(i): _float(str(i), path, v) for i, v in enumerate(obj)}, "pipeline", "torch")
    raise ValueError(
        f"{path}: holds a {type(obj).__name__}; expected a tensor, a dict of tensors, a list of tensors or a "
        "ComfyUI LATENT dict ({'samples': tensor})"
    )


def load_latent_file(path: str | os.PathLike[str]) -> LatentFile:
    """Read ``path`` (by its suffix: ``.safetensors``/``.sft``/``.latent`` or ``.pt``/``.pth``/``.bin``/``.ckpt``).

    A safetensors file holding ``latent_tensor`` is read as ComfyUI's format whatever its suffix.
    Raises ``ValueError`` naming the file and what was expected (``FileNotFoundError`` if it is missing).
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such file")
    suffix = p.suffix.lower()
    if suffix in _SAFETENSORS:
        tensors = _read_safetensors(p)
        if "latent_tensor" in tensors:
            return _comfyui(p, dict(tensors))
        if not tensors:
            raise ValueError(f"{p}: holds no tensors")
        return LatentFile(p, {k: _float(k, p, v) for k, v in tensors.items()}, "pipeline", "safetensors")
    if suffix in _TORCH:
        return _from_object(p, _read_torch(p))
    raise ValueError(f"{p}: cannot tell the format from {suffix or 'no suffix'!r}; expected one of {LATENT_SUFFIXES}")
