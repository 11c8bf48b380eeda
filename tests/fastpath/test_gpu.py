"""The fast path's CUDA branches (pinned copies on the worker's stream, events, nvJPEG, channels-last,
compiled decodes), where a GPU is present; skipped on a CPU, where tests/fastpath drives the same logic with
the device checks forced."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hf_remote_vae_toolkit.client import remote_decode
from hf_remote_vae_toolkit.testing import running_server
from hf_remote_vae_toolkit.vae.fastpath import FastPath, Pending

from .conftest import load_handler

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]
CUDA = torch.device("cuda")


def test_pinned_round_trip_on_the_copy_stream() -> None:
    fast = FastPath(CUDA, jpeg=False)
    x = torch.randn(2, 3, 64, 64)
    on_device = fast.to_device(x, torch.float16)
    assert on_device.device.type == "cuda" and on_device.dtype == torch.float16
    pending = fast.to_host(on_device * 2)
    assert isinstance(pending, Pending) and pending.event is not None
    assert pending.value.is_pinned()
    back = fast.result(pending)  # CUDA defers by default
    assert isinstance(back, Pending)
    assert torch.allclose(back.wait().float(), (x.half() * 2).float())


def test_nvjpeg_when_torchvision_has_it() -> None:
    fast = FastPath(CUDA)
    if fast.jpeg is None:
        pytest.skip("torchvision with CUDA JPEG encoding is not installed")
    image = torch.zeros(1, 32, 48, 3, dtype=torch.uint8, device=CUDA)
    image[..., 0] = 200
    pending = fast.jpeg_on_device(image, 90)
    assert pending is not None
    decoded = np.asarray(Image.open(io.BytesIO(pending.wait())))
    assert decoded.shape == (32, 48, 3) and abs(int(decoded[..., 0].mean()) - 200) < 4


def test_gpu_server_matches_the_cpu_decode(model_repo: Callable[[str], Path]) -> None:
    repo = model_repo("sd-v1-decode")
    cpu = load_handler(repo, device="cpu")
    gpu = load_handler(repo, device="cuda", environ={"VAE_DTYPE": "float32", "WARMUP_SHAPES": "1x4x8x8"})
    assert gpu.loaded.tuned and "decoder" in gpu.loaded.compiled  # VAE_COMPILE auto: on for CUDA
    z = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    params = {"output_type": "pt", "scaling_factor": 0.18215}
    expected = cpu({"inputs": z, "parameters": params})
    with running_server(handler=gpu) as url:
        raw = remote_decode(url, z, output_type="pt", return_type="pt", scaling_factor=0.18215)
        image = remote_decode(url, z, image_format="jpg", scaling_factor=0.18215)
    assert gpu.loaded.compiled["decoder"].calls["compiled"] >= 2  # warm-up + the request
    assert torch.allclose(raw, expected, atol=1e-2)  # cuDNN may use TF32 for convolutions
    assert image.size == (64, 64)
