"""The preview tier: custom_handlers/taesd-decode, taesdxl-decode, taef1-decode.

Each is served from a repo written by ``init-repo <name> --random-weights tiny`` (the real
``AutoencoderTiny`` class, tiny config), with the real server, and called through diffusers' own
``remote_decode``. The answers must equal a local ``AutoencoderTiny.decode`` of the latents mapped to
the diffusion model's space, exactly as a pipeline with ``pipe.vae = AutoencoderTiny`` would decode them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
import torch
from diffusers import AutoencoderTiny
from diffusers.image_processor import VaeImageProcessor
from diffusers.utils.remote_utils import remote_decode

from hf_remote_vae_toolkit import protocol
from hf_remote_vae_toolkit.contract import RequestInfo
from hf_remote_vae_toolkit.testing import running_server
from hf_remote_vae_toolkit.vae.builtin import BUILTIN_HANDLERS, builtin_handler_class, detect_handler_name
from hf_remote_vae_toolkit.vae.families import FAMILIES, PREVIEW_OF, get_family
from hf_remote_vae_toolkit.vae.repo import init_repo

#: preview handler -> (latent channels, the full family's scaling_factor, shift_factor)
PREVIEWS = {"taesd": (4, 0.18215, 0.0), "taesdxl": (4, 0.13025, 0.0), "taef1": (16, 0.3611, 0.1159)}


@pytest.fixture(scope="module", params=sorted(PREVIEWS))
def preview(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, Any]]:
    name = request.param
    repo = init_repo(f"{name}-decode", tmp_path_factory.mktemp(name), random_weights="tiny")
    vae = AutoencoderTiny.from_pretrained(str(repo), torch_dtype=torch.float32).eval()
    with running_server(repo) as url:
        yield name, url, vae


def _latents(channels: int, batch: int = 1, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, channels, 8, 8, generator=torch.Generator().manual_seed(seed))


def _local_raw(vae: Any, z: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return vae.decode(z).sample


def _uint8(raw: torch.Tensor) -> np.ndarray:
    return (VaeImageProcessor().postprocess(raw, output_type="np") * 255).round().astype("uint8")


def test_the_families_are_registered_and_not_built_in() -> None:
    for name, (channels, _, _) in PREVIEWS.items():
        fam = get_family(name)
        assert fam.class_name == "AutoencoderTiny" and fam.latent_channels == channels
        assert fam.scaling_factor == 1.0  # the weights' own: they decode the diffusion model's space
        assert PREVIEW_OF[name] in FAMILIES
        assert f"{name}-decode" not in BUILTIN_HANDLERS
        with pytest.raises(ValueError, match="custom_handlers"):
            builtin_handler_class(f"{name}-decode")


def test_a_bare_autoencoder_tiny_is_not_mistaken_for_another_family(tmp_path: Path) -> None:
    FAMILIES["taef1"].build_random("tiny").save_config(tmp_path)
    assert detect_handler_name(tmp_path) is None


def test_pipeline_latents_with_the_family_factors_equal_a_local_decode(preview: tuple[str, str, Any]) -> None:
    name, url, vae = preview
    channels, scale, shift = PREVIEWS[name]
    z = _latents(channels, batch=2)  # what a pipeline returns with output_type="latent"
    out = remote_decode(
        endpoint=f"{url}/",
        tensor=z,
        scaling_factor=scale,
        shift_factor=shift or None,
        output_type="pt",
        return_type="pt",
    )
    torch.testing.assert_close(out, _local_raw(vae, z), rtol=0, atol=0)


def test_do_scaling_decodes_pipeline_latents_as_they_are(preview: tuple[str, str, Any]) -> None:
    name, url, vae = preview
    z = _latents(PREVIEWS[name][0], seed=1)
    image = remote_decode(endpoint=f"{url}/", tensor=z, image_format="png")  # diffusers' default: do_scaling
    np.testing.assert_array_equal(np.asarray(image), _uint8(_local_raw(vae, z))[0])


def test_vae_space_latents_are_mapped_as_comfyui_maps_them(preview: tuple[str, str, Any]) -> None:
    """No scaling = the full VAE's own space (a ComfyUI LATENT): TAESD reads ``(x - shift) * scale``."""
    name, url, vae = preview
    channels, scale, shift = PREVIEWS[name]
    x = _latents(channels, seed=2)
    out = remote_decode(
        endpoint=f"{url}/", tensor=x, do_scaling=False, output_type="pt", return_type="pt", partial_postprocess=True
    )
    np.testing.assert_array_equal(out.numpy(), _uint8(_local_raw(vae, (x - shift) * scale)))


def test_a_wrong_channel_count_is_a_400_naming_the_shape(preview: tuple[str, str, Any]) -> None:
    name, url, _ = preview
    channels = PREVIEWS[name][0]
    bad = torch.zeros(1, channels + 1, 8, 8)
    r = requests.post(
        url,
        data=protocol.tensor_to_bytes(bad),
        params={"shape": list(bad.shape), "dtype": "float32", "output_type": "pt"},
        headers={"Content-Type": protocol.TENSOR_BINARY, "Accept": protocol.TENSOR_BINARY},
        timeout=60,
    )
    assert r.status_code == 400
    assert f"[B, {channels}, h, w]" in r.json()["error"]


def test_taef1_reads_packed_flux_latents(preview: tuple[str, str, Any]) -> None:
    name, url, vae = preview
    if name != "taef1":
        pytest.skip("packed latents are Flux's layout")
    from diffusers import FluxPipeline

    z = _latents(16, seed=3)  # [1, 16, 8, 8] -> a 64x64 image
    packed = FluxPipeline._pack_latents(z, 1, 16, 8, 8)
    out = remote_decode(
        endpoint=f"{url}/", tensor=packed, height=64, width=64, scaling_factor=0.3611, shift_factor=0.1159,
        output_type="pt", return_type="pt",
    )  # fmt: skip
    torch.testing.assert_close(out, _local_raw(vae, z), rtol=0, atol=0)


def test_the_memory_estimate_is_the_tiny_decoders_and_never_tiles(tmp_path: Path) -> None:
    import importlib.util

    repo = init_repo("taesd-decode", tmp_path / "repo", random_weights="tiny")
    spec = importlib.util.spec_from_file_location("taesd_preview_handler", repo / "handler.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    handler = module.EndpointHandler(str(repo), device="cpu", environ={"GPU_MEMORY_BUDGET_GB": "0.000001"})
    data = {"inputs": torch.zeros(2, 4, 16, 16), "parameters": {"output_type": "pt"}}
    job = handler.parse(data, RequestInfo(body_parameters=True))
    assert handler.estimate_memory(job) == module.BYTES_PER_PIXEL_PER_ITEM * 4 * 2 * 128 * 128
    out = handler(data)  # far over the tiny budget: still one plain decode (AutoencoderTiny cannot tile)
    assert out.shape == (2, 3, 128, 128)
