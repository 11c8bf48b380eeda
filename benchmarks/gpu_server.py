"""GPU sections on the server side: decode time next to docs/reference-figures.md, and a remote client end to end.

Server-side decode: the SD v1 handler loaded from a model repo with full-size random weights, timed
three ways at each size: the bare ``vae.decode`` (what docs/reference-figures.md measured), the handler returning a
uint8 tensor (decode + postprocess + device-to-host copy) and the handler returning JPEG (plus the
encode on the CPU). Medians after a warm-up, with the device synchronised.

Remote client: ``hf-remote-vae serve`` in a child process on the same GPU; this process holds only a
latent on the GPU, sends it with ``remote_decode`` and receives the image, and its own peak GPU memory
is read: the measured version of the "remote" column of the memory table.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import torch

from hf_remote_vae_toolkit.client import remote_decode
from hf_remote_vae_toolkit.testing import serving_process

from .gpu_memory import peak_bytes, reset_peak, sync
from .outputs import OUTPUT_TYPES, SD_SCALING

__all__ = ["ANCHOR_MS", "run_server_decode", "run_remote_client"]

#: docs/reference-figures.md, SD v1 fp16 eager ``vae.decode`` on one H100.
ANCHOR_MS = {512: 22.0, 1024: 90.0, 2048: 421.0}


def _median_ms(fn: Any, device: torch.device, repeats: int) -> float:
    fn()
    sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append((time.perf_counter() - start) * 1000)
    return round(statistics.median(times), 2)


def run_server_decode(handler: Any, sizes: list[int], repeats: int, log: Any) -> list[dict[str, Any]]:
    """Rows of ``{size, vae_decode_ms, handler_uint8_ms, handler_jpeg_ms, anchor_ms}``."""
    loaded = handler.loaded
    device = loaded.device
    rows = []
    for size in sizes:
        z = torch.randn(1, 4, size // 8, size // 8, generator=torch.Generator().manual_seed(size))
        z_dev = (z / SD_SCALING).to(device, loaded.dtype)

        def bare(z_dev: torch.Tensor = z_dev) -> None:
            with torch.inference_mode():
                loaded.vae.decode(z_dev)

        uint8, jpeg = OUTPUT_TYPES["uint8 tensor"], OUTPUT_TYPES["jpeg"]
        row = {
            "size": size,
            "dtype": str(loaded.dtype)[6:],
            "vae_decode_ms": _median_ms(bare, device, repeats),
            "handler_uint8_ms": _median_ms(lambda o=uint8, z=z: o.run(handler, z.half()), device, repeats),
            "handler_jpeg_ms": _median_ms(lambda o=jpeg, z=z: o.run(handler, z.half()), device, repeats),
            "anchor_ms": ANCHOR_MS.get(size),
        }
        if row["anchor_ms"]:
            row["vs_anchor"] = round(row["vae_decode_ms"] / row["anchor_ms"], 2)
        log(row)
        rows.append(row)
    return rows


def run_remote_client(model_dir: Path, size: int, device: torch.device, log: Any) -> list[dict[str, Any]]:
    """One row: this process's peak GPU memory while a server child process decodes its latent."""
    with serving_process(model_dir, {"LOG_LEVEL": "warning"}, timeout=300) as (url, _proc):
        reset_peak(device)
        # Whatever this process already holds (nothing, if the caller freed its models) is not the client's.
        baseline = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0
        z = torch.randn(1, 4, size // 8, size // 8, device=device, dtype=torch.float16)
        start = time.perf_counter()
        image = remote_decode(url, z, scaling_factor=SD_SCALING, output_type="pt", partial_postprocess=True,
                              return_type="pt")  # fmt: skip
        ms = (time.perf_counter() - start) * 1000
        row = {
            "size": size,
            "latent_bytes": z.numel() * z.element_size(),
            "client_peak_bytes": None if (peak := peak_bytes(device)) is None else peak - baseline,
            "output_shape": list(image.shape),
            "output_device": str(image.device),
            "round_trip_ms": round(ms, 1),
        }
    log(row)
    return [row]
