"""Load a family's VAE from a model directory, and say which numbers it runs with.

Where the weights are: the directory root (a VAE-only repo such as ``stabilityai/sd-vae-ft-mse``) or its
``vae/`` subfolder (a whole pipeline repo such as ``black-forest-labs/FLUX.1-schnell``). Either way they
load through diffusers' ``from_pretrained``, the path real weights take.

Which numbers: the family's defaults (docs/protocol.md), overridden by the weights' own
``config.json`` (a fine-tune may change ``scaling_factor``), the dtype overridden by ``VAE_DTYPE``.

How it runs (``fastpath.py``): on CUDA, cuDNN autotuning and channels-last weights (``channels_last_3d`` for a
video VAE's 5-D weights) for every family; ``compile_vae`` adds ``torch.compile`` per warmed shape (``VAE_COMPILE``).
"""

from __future__ import annotations

import importlib.util
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..protocol import DTYPES
from .families import Family, get_family
from .fastpath import ShapeCompiled, compile_module, tune_module

__all__ = [
    "LoadedVAE",
    "find_weights_dir",
    "resolve_device",
    "resolve_dtype",
    "load_vae",
    "compile_vae",
    "WEIGHT_FILES",
]

#: File names diffusers writes for a model's weights (safetensors first: it loads without pickle).
WEIGHT_FILES = (
    "diffusion_pytorch_model.safetensors",
    "diffusion_pytorch_model.fp16.safetensors",
    "diffusion_pytorch_model.bin",
    "diffusion_pytorch_model.fp16.bin",
)


@dataclass
class LoadedVAE:
    """A VAE on its device, and the effective numbers a handler needs.

    ``latents_mean``/``latents_std`` are per-channel lists (Wan) or None; ``scaling_factor`` is None
    for a family normalised per channel instead.
    """

    vae: Any
    family: Family
    weights_dir: Path
    device: torch.device
    dtype: torch.dtype
    latent_channels: int
    scaling_factor: float | None
    shift_factor: float | None
    latents_mean: list[float] | None
    latents_std: list[float] | None
    config: dict[str, Any]
    #: ``"decoder"``/``"encoder"`` -> its compiled forward (``compile_vae``); empty: eager
    compiled: dict[str, ShapeCompiled] = field(default_factory=dict)
    #: whether the weights were laid out channels-last with cuDNN autotuning (CUDA)
    tuned: bool = False
    #: the device's transfers and encoders (``fastpath.FastPath``), made on first use
    fastpath: Any = None


def _has_weights(directory: Path) -> bool:
    return (directory / "config.json").is_file() and any((directory / name).is_file() for name in WEIGHT_FILES)


def find_weights_dir(path: str | os.PathLike[str]) -> Path:
    """The directory holding ``config.json`` + weights: ``path`` itself, else ``path/vae``."""
    root = Path(path)
    for candidate in (root, root / "vae"):
        if _has_weights(candidate):
            return candidate
    raise FileNotFoundError(
        f"no VAE weights in {root} or {root / 'vae'}: expected config.json and one of {list(WEIGHT_FILES)}. "
        "Create a deployable repo with `hf-remote-vae init-repo NAME --out DIR --weights HUB_ID` "
        "(or `--random-weights tiny` for a test)."
    )


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """The given device, else the current CUDA device when there is one, else the CPU."""
    if device is not None:
        return torch.device(device)
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def resolve_dtype(family: Family, device: torch.device, override: str | None = None) -> torch.dtype:
    """``override`` (``VAE_DTYPE``) if set; else the family's dtype on CUDA, float32 elsewhere.

    float32 on a CPU because half-precision convolutions there are many times slower, not faster.
    """
    override = (override or "").strip().lower()
    if override:
        if override not in DTYPES or override == "uint8":
            valid = sorted(name for name in DTYPES if name != "uint8")
            raise ValueError(f"VAE_DTYPE must be one of {valid}, got {override!r}")
        return DTYPES[override]
    return DTYPES[family.cuda_dtype] if device.type == "cuda" else torch.float32


def _effective(config: Mapping[str, Any], family: Family) -> dict[str, Any]:
    """Family defaults overridden by whatever the weights' config states."""

    def pick(key: str, default: Any) -> Any:
        value = config.get(key)
        return default if value is None else value

    channels = config.get("latent_channels") or config.get("z_dim") or family.latent_channels
    return {
        "latent_channels": int(channels),
        "scaling_factor": pick("scaling_factor", family.scaling_factor),
        "shift_factor": pick("shift_factor", family.shift_factor),
        "latents_mean": pick("latents_mean", family.latents_mean),
        "latents_std": pick("latents_std", family.latents_std),
    }


def load_vae(
    path: str | os.PathLike[str],
    family: Family | str,
    *,
    device: str | torch.device | None = None,
    dtype: str | None = None,
) -> LoadedVAE:
    """Load the family's diffusers VAE class from ``path`` (root or ``vae/``), eval mode, on its device."""
    fam = get_family(family) if isinstance(family, str) else family
    weights_dir = find_weights_dir(path)
    config = json.loads((weights_dir / "config.json").read_text(encoding="utf-8"))
    dev = resolve_device(device)
    torch_dtype = resolve_dtype(fam, dev, dtype)
    # a repo that ships only the half-precision files needs diffusers told so
    plain = any((weights_dir / name).is_file() for name in WEIGHT_FILES if ".fp16." not in name)
    variant = None if plain else "fp16"
    # low_cpu_mem_usage needs accelerate; without it diffusers would log a warning on every load
    lean = importlib.util.find_spec("accelerate") is not None
    vae_class: Any = fam.vae_class()
    vae = vae_class.from_pretrained(str(weights_dir), torch_dtype=torch_dtype, variant=variant, low_cpu_mem_usage=lean)
    vae = vae.to(dev).eval().requires_grad_(False)
    tuned = tune_module(vae, dev)
    numbers = _effective(config, fam)
    return LoadedVAE(
        vae=vae,
        family=fam,
        weights_dir=weights_dir,
        device=dev,
        dtype=torch_dtype,
        config=config,
        tuned=tuned,
        **numbers,
    )


def compile_vae(loaded: LoadedVAE, parts: tuple[str, ...] = ("decoder",), compiler: Any = None) -> LoadedVAE:
    """Compile ``loaded.vae``'s ``parts`` (``decoder``, ``encoder``) per warmed shape (``fastpath.ShapeCompiled``);
    nothing is compiled until a shape is warmed. Returns ``loaded``."""
    for part in parts:
        module = getattr(loaded.vae, part, None)
        if part not in loaded.compiled and isinstance(module, torch.nn.Module):
            compiled = compile_module(module, compiler)
            if compiled is not None:
                loaded.compiled[part] = compiled
    return loaded
