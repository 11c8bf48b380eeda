"""Validation errors (status + JSON, through the diffusers client too) and the older protocol variants."""

from __future__ import annotations

import base64
import io
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
import torch
from diffusers.utils.remote_utils import remote_decode, remote_encode
from PIL import Image

from hf_remote_vae_toolkit import media, protocol
from hf_remote_vae_toolkit.testing import running_server

TIMEOUT = 60


@pytest.fixture(scope="module")
def flux_url(model_repo: Callable[[str], Path]) -> Iterator[str]:
    with running_server(model_repo("flux-decode")) as url:
        yield url


@pytest.fixture(scope="module")
def sd_url(model_repo: Callable[[str], Path]) -> Iterator[str]:
    with running_server(model_repo("sd-v1-decode")) as url:
        yield url


@pytest.fixture(scope="module")
def small_limit_urls(model_repo: Callable[[str], Path]) -> Iterator[tuple[str, str]]:
    """Decode and encode servers whose handlers were built with MAX_PIXELS=64x64."""
    old = os.environ.get("MAX_PIXELS")
    os.environ["MAX_PIXELS"] = "64x64"  # read once, when each handler is built
    try:
        with running_server(model_repo("sd-v1-decode")) as dec, running_server(model_repo("sd-v1-encode")) as enc:
            yield dec, enc
    finally:
        if old is None:
            os.environ.pop("MAX_PIXELS", None)
        else:
            os.environ["MAX_PIXELS"] = old


def post_tensor(url: str, z: torch.Tensor, accept: str = protocol.TENSOR_BINARY, **params: Any) -> requests.Response:
    query = {"shape": list(z.shape), "dtype": protocol.dtype_name(z.dtype), **params}
    headers = {"Content-Type": protocol.TENSOR_BINARY, "Accept": accept}
    return requests.post(url, data=protocol.tensor_to_bytes(z), params=query, headers=headers, timeout=TIMEOUT)


def assert_400(response: requests.Response, needle: str) -> None:
    assert response.status_code == 400, response.text
    assert needle in response.json()["error"]


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("shape", "params", "needle"),
    [
        ((1, 4, 8, 8), {}, "expected [B, 16, h, w]"),  # wrong channel count
        ((16, 8), {}, "got a 2-D tensor"),  # wrong rank
        ((1, 20, 64), {"height": 64, "width": 64}, "needs [1, 16, 64]"),  # packed length vs height/width
        ((1, 16, 2, 8, 8), {}, "5-D video latent"),  # video latents to an image model
    ],
)
def test_shape_errors(flux_url: str, shape: tuple[int, ...], params: dict[str, Any], needle: str) -> None:
    z = torch.zeros(shape)
    assert_400(post_tensor(flux_url, z, output_type="pt", **params), needle)
    with pytest.raises(RuntimeError, match=needle.replace("[", r"\[").replace("]", r"\]")):
        kwargs = params if len(shape) != 3 else {"height": params["height"], "width": params["width"]}
        remote_decode(flux_url, z, output_type="pt", return_type="pt", do_scaling=False, **kwargs)


def test_mp4_from_an_image_model(sd_url: str) -> None:
    z = torch.zeros(1, 4, 8, 8)
    response = post_tensor(sd_url, z, accept=protocol.TEXT_PLAIN, output_type="mp4")
    assert_400(response, "needs a video VAE")
    assert "output_type=pt" in response.json()["error"]  # it says which combinations are valid
    with pytest.raises(RuntimeError, match="needs a video VAE"):
        remote_decode(sd_url, z, output_type="mp4", return_type="mp4", do_scaling=False)


def test_image_accept_with_pt_is_refused(sd_url: str) -> None:
    assert_400(post_tensor(sd_url, torch.zeros(1, 4, 8, 8), accept=protocol.IMAGE_PNG, output_type="pt"), "valid")


def test_integer_latents_are_refused(sd_url: str) -> None:
    z = torch.zeros(1, 4, 8, 8, dtype=torch.uint8)
    assert_400(post_tensor(sd_url, z), "latents must be float16, bfloat16 or float32")


def test_pixel_limits(small_limit_urls: tuple[str, str]) -> None:
    dec, enc = small_limit_urls
    assert post_tensor(dec, torch.zeros(1, 4, 8, 8), output_type="pt").status_code == 200
    with pytest.raises(RuntimeError, match="limit of 64x64"):
        remote_decode(dec, torch.zeros(1, 4, 16, 8), do_scaling=False)
    assert_400(post_tensor(dec, torch.zeros(1, 4, 8, 16), output_type="pt"), "MAX_PIXELS")
    with pytest.raises(RuntimeError, match="limit of 64x64"):
        remote_encode(enc, Image.new("RGB", (72, 64)))


# --------------------------------------------------------------------------- older variants (docs/protocol.md)


def test_tensor_base64_in_and_out(sd_url: str, local_vae: Any) -> None:
    z = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    body = {"inputs": base64.b64encode(protocol.tensor_to_bytes(z)).decode()}
    query = {"shape": [1, 4, 8, 8], "dtype": "float32", "output_type": "pt", "input_tensor_type": "base64"}
    headers = {"Content-Type": protocol.TENSOR_BASE64, "Accept": protocol.TENSOR_BASE64}
    r = requests.post(sd_url, json=body, params=query, headers=headers, timeout=TIMEOUT)
    assert r.status_code == 200, r.text
    payload = r.json()
    out = protocol.tensor_from_bytes(base64.b64decode(payload["inputs"]), **payload["parameters"])
    with torch.no_grad():
        assert torch.allclose(out, local_vae("sd-v1").decode(z).sample, atol=1e-5)


def test_json_v0_applies_model_scaling(sd_url: str, local_vae: Any) -> None:
    z = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    payload = {
        "inputs": base64.b64encode(protocol.tensor_to_bytes(z)).decode(),
        "parameters": {"shape": [1, 4, 8, 8], "dtype": "float32", "output_tensor_type": "binary"},
    }
    r = requests.post(sd_url, json=payload, headers={"Accept": protocol.IMAGE_JPEG}, timeout=TIMEOUT)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith(protocol.IMAGE_JPEG)
    image = np.asarray(Image.open(io.BytesIO(r.content)))
    with torch.no_grad():
        x = local_vae("sd-v1").decode(z / 0.18215).sample
    expected = (x[0] / 2 + 0.5).clamp(0, 1).permute(1, 2, 0).mul(255).round().to(torch.uint8).numpy()
    # the model-scaled local decode, through the same JPEG encoder (a noise image: compare exactly, not by eye)
    assert np.array_equal(image, np.asarray(Image.open(io.BytesIO(media.encode_jpeg(Image.fromarray(expected))))))


def test_accept_wins_over_image_format(sd_url: str) -> None:
    r = post_tensor(sd_url, torch.zeros(1, 4, 8, 8), accept=protocol.IMAGE_PNG, image_format="jpg")
    assert r.status_code == 200 and r.content.startswith(b"\x89PNG")


def test_jpeg_quality_param(sd_url: str) -> None:
    z = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    small = post_tensor(sd_url, z, accept=protocol.IMAGE_JPEG, jpeg_quality=10).content
    large = post_tensor(sd_url, z, accept=protocol.IMAGE_JPEG, jpeg_quality=95).content
    assert small[:2] == large[:2] == b"\xff\xd8" and len(small) < len(large)
    assert_400(post_tensor(sd_url, z, accept=protocol.IMAGE_JPEG, jpeg_quality=0), "jpeg_quality")
