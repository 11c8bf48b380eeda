"""The real diffusers client against the real server, for each image family (tiny random weights).

Every combination ``remote_decode`` accepts for an image model is compared with a local decode of the
same weights: bit-equal for uint8 and PNG, allclose for float tensors.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from diffusers.image_processor import VaeImageProcessor
from diffusers.utils.remote_utils import remote_decode
from PIL import Image

from hf_remote_vae_toolkit import media
from hf_remote_vae_toolkit.testing import running_server
from hf_remote_vae_toolkit.vae.families import get_family

FAMILIES = ("sd-v1", "sdxl", "flux")


@pytest.fixture(scope="module", params=FAMILIES)
def served(request: pytest.FixtureRequest, model_repo: Callable[[str], Path], local_vae: Any) -> Iterator[Any]:
    family = request.param
    with running_server(model_repo(f"{family}-decode")) as url:
        yield family, url, local_vae(family)


def latents(family: str, batch: int = 1, seed: int = 0) -> torch.Tensor:
    c = get_family(family).latent_channels
    return torch.randn(batch, c, 8, 8, generator=torch.Generator().manual_seed(seed))


def local_raw(vae: Any, z: torch.Tensor, scale: float | None = None, shift: float | None = None) -> torch.Tensor:
    """Reference decode: de-normalise as docs/protocol.md says, then ``vae.decode``; [B, 3, H, W] in [-1, 1]."""
    if scale is not None:
        z = z / scale
    if shift is not None:
        z = z + shift
    with torch.no_grad():
        return vae.decode(z).sample


def local_uint8(raw: torch.Tensor) -> np.ndarray:
    """diffusers' own postprocess: uint8 [B, H, W, 3]."""
    return (VaeImageProcessor().postprocess(raw, output_type="np") * 255).round().astype("uint8")


# --------------------------------------------------------------------------- output kinds


@pytest.mark.parametrize("batch", [1, 2])
def test_pt_raw_tensor(served: Any, batch: int) -> None:
    family, url, vae = served
    z = latents(family, batch)
    out = remote_decode(url, z, output_type="pt", return_type="pt", do_scaling=False)
    ref = local_raw(vae, z)
    assert out.shape == ref.shape == (batch, 3, 64, 64) and out.dtype == torch.float32
    assert torch.allclose(out, ref, atol=1e-5)


@pytest.mark.parametrize("batch", [1, 2])
def test_pt_partial_uint8(served: Any, batch: int) -> None:
    family, url, vae = served
    z = latents(family, batch)
    out = remote_decode(url, z, output_type="pt", partial_postprocess=True, return_type="pt", do_scaling=False)
    assert out.dtype == torch.uint8 and out.shape == (batch, 64, 64, 3)
    assert np.array_equal(out.numpy(), local_uint8(local_raw(vae, z)))


def test_pt_partial_pil(served: Any) -> None:
    family, url, vae = served
    z = latents(family, 2)
    images = remote_decode(url, z, output_type="pt", partial_postprocess=True, return_type="pil", do_scaling=False)
    expected = local_uint8(local_raw(vae, z))
    assert [np.asarray(im).tolist() for im in images] == [e.tolist() for e in expected]


def test_pt_with_processor_to_pil(served: Any) -> None:
    family, url, vae = served
    z = latents(family)
    image = remote_decode(url, z, output_type="pt", processor=VaeImageProcessor(), do_scaling=False)
    assert np.array_equal(np.asarray(image), local_uint8(local_raw(vae, z))[0])


@pytest.mark.parametrize("return_type", ["pil", "pt"])
def test_pil_with_processor_gets_unit_floats(served: Any, return_type: str) -> None:
    family, url, vae = served
    z = latents(family, 2)
    out = remote_decode(
        url, z, output_type="pil", processor=VaeImageProcessor(), return_type=return_type, do_scaling=False
    )
    ref = local_raw(vae, z)
    if return_type == "pt":
        assert out.shape == (2, 3, 64, 64) and out.dtype == torch.float32
        assert torch.allclose(out, (ref / 2 + 0.5).clamp(0, 1), atol=1e-6)
    else:
        assert [np.asarray(im).tolist() for im in out] == [e.tolist() for e in local_uint8(ref)]


def test_png_is_bit_equal(served: Any) -> None:
    family, url, vae = served
    z = latents(family, 2)
    image = remote_decode(url, z, image_format="png", do_scaling=False)
    assert image.format == "png" and image.size == (64, 64)
    assert np.array_equal(np.asarray(image), local_uint8(local_raw(vae, z))[0])  # first of the batch


def test_jpeg_is_the_local_image_encoded(served: Any) -> None:
    family, url, vae = served
    z = latents(family)
    image = remote_decode(url, z, image_format="jpg", do_scaling=False)
    expected = Image.open(io.BytesIO(media.encode_jpeg(Image.fromarray(local_uint8(local_raw(vae, z))[0]))))
    assert image.format == "jpeg"
    assert np.array_equal(np.asarray(image), np.asarray(expected.convert("RGB")))


# --------------------------------------------------------------------------- scaling


def test_explicit_factors(served: Any) -> None:
    family, url, vae = served
    fam = get_family(family)
    z = latents(family)
    out = remote_decode(
        url, z, output_type="pt", return_type="pt", scaling_factor=fam.scaling_factor, shift_factor=fam.shift_factor
    )
    assert torch.allclose(out, local_raw(vae, z, fam.scaling_factor, fam.shift_factor), atol=1e-5)


def test_legacy_do_scaling_uses_model_factors(served: Any) -> None:
    family, url, vae = served
    fam = get_family(family)
    z = latents(family)
    out = remote_decode(url, z, output_type="pt", partial_postprocess=True, return_type="pt", do_scaling=True)
    assert np.array_equal(out.numpy(), local_uint8(local_raw(vae, z, fam.scaling_factor, fam.shift_factor)))


# --------------------------------------------------------------------------- layouts


def test_4d_with_height_and_width_ignores_them(served: Any) -> None:
    family, url, vae = served
    z = latents(family)
    out = remote_decode(url, z, output_type="pt", return_type="pt", do_scaling=False, height=1024, width=512)
    assert torch.allclose(out, local_raw(vae, z), atol=1e-5)


def test_packed_latents_decode_for_flux_and_are_refused_elsewhere(served: Any) -> None:
    family, url, vae = served
    if family != "flux":
        packed = torch.randn(1, 12, 16)
        with pytest.raises(RuntimeError, match=r"decodes \[B, 4, h, w\] latents; got a 3-D tensor"):
            remote_decode(url, packed, output_type="pt", return_type="pt", height=64, width=48, do_scaling=False)
        return
    z = torch.randn(2, 16, 8, 6, generator=torch.Generator().manual_seed(3))
    packed = z.view(2, 16, 4, 2, 3, 2).permute(0, 2, 4, 1, 3, 5).reshape(2, 12, 64).contiguous()
    out = remote_decode(
        url, packed, output_type="pt", partial_postprocess=True, return_type="pt", height=64, width=48, do_scaling=False
    )
    assert out.shape == (2, 64, 48, 3)
    assert np.array_equal(out.numpy(), local_uint8(local_raw(vae, z)))
