"""The real diffusers ``remote_encode`` against the real server, for each image family (tiny weights)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
import torch
from diffusers.utils.remote_utils import remote_decode, remote_encode
from PIL import Image

from hf_remote_vae_toolkit import protocol
from hf_remote_vae_toolkit.testing import running_server
from hf_remote_vae_toolkit.vae.families import get_family

FAMILIES = ("sd-v1", "sdxl", "flux")


@pytest.fixture(scope="module", params=FAMILIES)
def served(request: pytest.FixtureRequest, model_repo: Callable[[str], Path], local_vae: Any) -> Iterator[Any]:
    family = request.param
    with running_server(model_repo(f"{family}-encode")) as url:
        yield family, url, local_vae(family)  # the encode repo was built with the decode repo's seed: same weights


def picture(mode: str, width: int = 48, height: int = 40) -> Image.Image:
    rng = np.random.default_rng(1)
    bands = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
    array = rng.integers(0, 256, (height, width, bands), dtype=np.uint8)
    return Image.fromarray(array[..., 0] if bands == 1 else array, mode)


def local_encode(vae: Any, image: Image.Image) -> torch.Tensor:
    """Reference: RGB, crop to multiples of 8, [-1, 1], the latent distribution's mode."""
    rgb = image.convert("RGB")
    rgb = rgb.crop((0, 0, rgb.width // 8 * 8, rgb.height // 8 * 8))
    x = torch.from_numpy(np.asarray(rgb).astype(np.float32) / 255.0 * 2 - 1).permute(2, 0, 1)[None]
    with torch.no_grad():
        return vae.encode(x).latent_dist.mode()


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L"])
def test_pil_images(served: Any, mode: str) -> None:
    family, url, vae = served
    image = picture(mode)
    out = remote_encode(url, image)
    assert out.shape == (1, get_family(family).latent_channels, 5, 6) and out.dtype == torch.float32
    assert torch.allclose(out, local_encode(vae, image), atol=1e-5)


def test_factors_applied_after_encode(served: Any) -> None:
    family, url, vae = served
    fam = get_family(family)
    image = picture("RGB")
    out = remote_encode(url, image, scaling_factor=fam.scaling_factor, shift_factor=fam.shift_factor)
    ref = local_encode(vae, image)
    if fam.shift_factor is not None:
        ref = ref - fam.shift_factor
    assert torch.allclose(out, ref * fam.scaling_factor, atol=1e-5)


@pytest.mark.parametrize("unit", [True, False])
def test_tensor_input(served: Any, unit: bool) -> None:
    _family, url, vae = served
    image = picture("RGB")
    x01 = torch.from_numpy(np.asarray(image).astype(np.float32) / 255.0).permute(2, 0, 1)[None].contiguous()
    x = x01 if unit else (x01 * 2 - 1).contiguous()
    out = remote_encode(url, x)
    assert torch.allclose(out, local_encode(vae, image), atol=1e-5)


def test_not_multiple_of_8_floors_by_cropping(served: Any) -> None:
    _family, url, vae = served
    image = picture("RGB", width=53, height=47)
    out = remote_encode(url, image)
    assert out.shape[-2:] == (5, 6)
    assert torch.allclose(out, local_encode(vae, image), atol=1e-5)


def test_encode_then_decode_keeps_size(served: Any, model_repo: Callable[[str], Path]) -> None:
    family, url, _ = served
    z = remote_encode(url, picture("RGB", width=48, height=40))
    with running_server(model_repo(f"{family}-decode")) as decode_url:
        image = remote_decode(decode_url, z, image_format="png", do_scaling=False)
    assert image.size == (48, 40)


def test_sample_is_random_unless_seeded(served: Any) -> None:
    _family, url, _ = served
    body = protocol.tensor_to_bytes(torch.rand(1, 3, 16, 16))
    query = {"shape": [1, 3, 16, 16], "dtype": "float32", "sample": True, "seed": 7}

    def post(params: dict[str, Any]) -> torch.Tensor:
        r = requests.post(url, data=body, params=params, timeout=60)
        assert r.status_code == 200, r.text
        return protocol.tensor_from_response(r.content, r.headers)

    mode = post({k: v for k, v in query.items() if k not in ("sample", "seed")})
    assert torch.equal(post(query), post(query))
    assert not torch.equal(post(query), mode)
