"""RemoteVAE in a tiny StableDiffusionPipeline built from configs (no downloads): the images equal a
local decode with the same VAE weights, which the real sd-v1 decode handler serves on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL, StableDiffusionPipeline
from PIL import Image

from hf_remote_vae_toolkit.client import RemoteVAE
from hf_remote_vae_toolkit.testing import running_server
from hf_remote_vae_toolkit.vae.loading import find_weights_dir
from hf_remote_vae_toolkit.vae.repo import init_repo

EMBED_DIM = 16  # as the tiny_sd_parts fixture builds the UNet


@pytest.fixture(scope="module")
def served_vae(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, AutoencoderKL]]:
    """(URL, the same VAE loaded locally)."""
    model_dir = Path(init_repo("sd-v1-decode", tmp_path_factory.mktemp("sd") / "repo", random_weights="tiny"))
    local = AutoencoderKL.from_pretrained(find_weights_dir(model_dir)).eval()
    with running_server(model_dir) as url:
        yield url, local


@pytest.fixture(scope="module")
def tiny_pipeline(tiny_sd_parts):
    """``tiny_pipeline(vae)``: a tiny StableDiffusionPipeline (prompt embeddings in, no tokenizer)."""
    return lambda vae: tiny_sd_parts.make(StableDiffusionPipeline, vae)


def run(pipe: StableDiffusionPipeline, output_type: str):
    embeds = torch.randn(2, 4, EMBED_DIM, generator=torch.Generator().manual_seed(1))
    return pipe(
        prompt_embeds=embeds,
        negative_prompt_embeds=torch.zeros_like(embeds),
        height=64,
        width=64,
        num_inference_steps=2,
        guidance_scale=2.0,
        output_type=output_type,
        generator=torch.Generator().manual_seed(2),
    ).images


def test_pipeline_with_remote_vae_matches_local_vae(served_vae, tiny_pipeline) -> None:
    url, local_vae = served_vae
    with torch.no_grad():
        expected = run(tiny_pipeline(local_vae), "np")
        pipe = tiny_pipeline(local_vae)
        pipe.vae = RemoteVAE(url, family="sd-v1")  # the documented swap, after construction
        got = run(pipe, "np")
        images = run(pipe, "pil")
    assert got.shape == expected.shape == (2, 64, 64, 3)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert len(images) == 2 and all(isinstance(im, Image.Image) and im.size == (64, 64) for im in images)


def test_uint8_transfer_gives_the_same_pil_images(served_vae, tiny_pipeline) -> None:
    url, _ = served_vae
    with torch.no_grad():
        raw = run(tiny_pipeline(RemoteVAE(url, family="sd-v1")), "pil")
        small = run(tiny_pipeline(RemoteVAE(url, family="sd-v1", transfer="uint8")), "pil")
    assert [np.asarray(im).tolist() for im in raw] == [np.asarray(im).tolist() for im in small]


def test_remote_vae_reports_the_family_config_and_refuses_encode() -> None:
    vae = RemoteVAE("http://127.0.0.1:9", family="flux")
    assert vae.config.scaling_factor == 0.3611 and vae.config.shift_factor == 0.1159
    assert 2 ** (len(vae.config.block_out_channels) - 1) == 8
    with pytest.raises(NotImplementedError, match="remote_encode"):
        vae.encode(torch.zeros(1, 3, 8, 8))
    with pytest.raises(ValueError, match="family"):
        RemoteVAE("http://127.0.0.1:9", family="nope")
