"""GPU sections: what decoding costs a client's GPU locally, and what a remote client holds instead.

A local-decode client holds the VAE's weights, the latent, the decoder's activations and the output;
a remote-decode client holds the latent only (it sends the bytes and gets an image or a tensor back
in host memory). Both also hold their diffusion model, which is the same on both sides and left out.
Peaks are ``torch.cuda.max_memory_allocated()`` from a reset, after emptying the cache; shares are of
the card's total memory. The VAEs are built with the family's *full* config and random weights
(``families.py``): memory and time depend on shapes, not weight values.
"""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass
from typing import Any

import torch

from hf_remote_vae_toolkit import protocol
from hf_remote_vae_toolkit.vae.families import get_family

__all__ = ["Case", "CASES", "DRY_CASES", "run_memory", "peak_bytes", "reset_peak", "sync"]


@dataclass(frozen=True)
class Case:
    label: str
    family: str
    latent_shape: tuple[int, ...]
    anchor_above_weights_gib: float | None  # docs/reference-figures.md "peak above weights", untiled
    tiled: bool = True  # also measure diffusers' tiled decode


#: The seed's table: SD v1 512 and 1024, SDXL 1024, Flux 1024, HunyuanVideo 61 frames 480x832.
CASES = [
    Case("SD v1 512²", "sd-v1", (1, 4, 64, 64), 0.60),
    Case("SD v1 1024²", "sd-v1", (1, 4, 128, 128), 2.38),
    Case("SDXL 1024²", "sdxl", (1, 4, 128, 128), 2.38),
    Case("Flux 1024²", "flux", (1, 16, 128, 128), 2.38),
    Case("HunyuanVideo 61x480x832", "hunyuanvideo", (1, 16, 16, 60, 104), 21.8),
]
#: ``--dry-run``: the same cases, tiny configs and tiny latents, on the CPU in seconds.
DRY_CASES = [
    Case(f"{c.label} (dry run)", c.family, (*c.latent_shape[:2], *((2, 8, 8) if len(c.latent_shape) == 5 else (8, 8))),
         None)
    for c in CASES
]  # fmt: skip

GiB = 1024**3


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_bytes(device: torch.device) -> int | None:
    """Peak allocated bytes since the last reset (None on a CPU, where torch does not track it)."""
    return int(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else None


def allocated_bytes(device: torch.device) -> int | None:
    return int(torch.cuda.memory_allocated(device)) if device.type == "cuda" else None


def build_vae(family: str, size: str, device: torch.device, dtype: torch.dtype) -> Any:
    """A random-weights VAE made directly on ``device`` (building a 250M-parameter model on the CPU takes long)."""
    fam = get_family(family)
    torch.manual_seed(0)
    with device:
        vae = fam.vae_class()(**fam.config(size))
    return vae.to(dtype=dtype).eval()


def _decode_peak(vae: Any, z: torch.Tensor, device: torch.device, tiled: bool) -> dict[str, Any]:
    if tiled:
        vae.enable_tiling()
    try:
        with torch.inference_mode():
            if z.ndim == 4:  # image VAEs: one untimed call first (cuDNN picks its algorithms)
                vae.decode(z)
            sync(device)
            reset_peak(device)
            start = time.perf_counter()
            out = vae.decode(z).sample
            sync(device)
            ms = (time.perf_counter() - start) * 1000
            del out
    finally:
        if tiled:
            vae.disable_tiling()
    return {"peak": peak_bytes(device), "ms": round(ms, 1)}


def _remote_client_peak(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> dict[str, Any]:
    """The remote client's share: its latent, serialised to bytes for the request (no decoder on its GPU)."""
    reset_peak(device)
    z = torch.randn(shape, device=device, dtype=dtype)
    payload = protocol.tensor_to_bytes(z)
    return {"peak": peak_bytes(device), "latent_bytes": len(payload)}


def _share(value: int | None, total: int | None) -> float | None:
    return round(value / total, 4) if value is not None and total else None


def run_memory(cases: list[Case], size: str, device: torch.device, log: Any) -> list[dict[str, Any]]:
    """One row per case: local (untiled, tiled) vs remote client peak bytes and share of the card."""
    total = torch.cuda.get_device_properties(device).total_memory if device.type == "cuda" else None
    rows = []
    for case in cases:
        fam = get_family(case.family)
        dtype = getattr(torch, fam.cuda_dtype) if device.type == "cuda" else torch.float32
        reset_peak(device)
        vae = build_vae(case.family, size, device, dtype)
        weights = allocated_bytes(device)
        z = torch.randn(case.latent_shape, device=device, dtype=dtype)
        row: dict[str, Any] = {"case": case.label, "latent": list(case.latent_shape), "dtype": str(dtype)[6:]}
        row["weights_bytes"] = weights
        local = _decode_peak(vae, z, device, tiled=False)
        row.update(local_peak=local["peak"], local_ms=local["ms"], local_share=_share(local["peak"], total))
        if weights is not None and local["peak"] is not None:
            row["local_above_weights_gib"] = round((local["peak"] - weights) / GiB, 2)
        row["anchor_above_weights_gib"] = case.anchor_above_weights_gib
        if case.tiled:
            tiled = _decode_peak(vae, z, device, tiled=True)
            row.update(tiled_peak=tiled["peak"], tiled_ms=tiled["ms"], tiled_share=_share(tiled["peak"], total))
        del vae, z
        remote = _remote_client_peak(case.latent_shape, dtype, device)
        row.update(remote_peak=remote["peak"], latent_bytes=remote["latent_bytes"])
        row["remote_share"] = _share(remote["peak"], total)
        row["card_bytes"] = total
        log(row)
        rows.append(row)
    reset_peak(device)
    return rows
