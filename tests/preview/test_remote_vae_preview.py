"""RemoteVAE's preview endpoint: quick images during sampling from a TAESD endpoint, the final one from the
full VAE. Real servers (sd-v1-decode and taesd-decode, tiny random weights) and a tiny real
StableDiffusionPipeline built from configs."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
from diffusers import AutoencoderTiny, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from diffusers.image_processor import VaeImageProcessor

from hf_remote_vae_toolkit.client import RemoteVAE
from hf_remote_vae_toolkit.testing import running_server
from hf_remote_vae_toolkit.vae.repo import init_repo

EMBED_DIM = 16


@pytest.fixture(scope="module")
def endpoints(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, Any]]:
    root = tmp_path_factory.mktemp("preview")
    full = init_repo("sd-v1-decode", root / "full", random_weights="tiny")
    tae = init_repo("taesd-decode", root / "tae", random_weights="tiny")
    with running_server(full) as full_url, running_server(tae) as tae_url:
        yield full_url, tae_url, AutoencoderTiny.from_pretrained(str(tae)).eval()


def _pipeline(vae: Any) -> StableDiffusionPipeline:
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=(8, 16), layers_per_block=1,
        norm_num_groups=4, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=EMBED_DIM, attention_head_dim=2,
    ).eval()  # fmt: skip
    return StableDiffusionPipeline(
        vae=vae, text_encoder=None, tokenizer=None, unet=unet, scheduler=DDIMScheduler(), safety_checker=None,
        feature_extractor=None, requires_safety_checker=False,
    )  # fmt: skip


def test_preview_equals_a_local_taesd_decode_of_the_pipeline_latents(endpoints: tuple[str, str, Any]) -> None:
    full_url, tae_url, tae = endpoints
    vae = RemoteVAE(full_url, family="sd-v1", preview_endpoint=tae_url)
    z = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))  # latents as sampling leaves them
    images = vae.preview(z)
    with torch.no_grad():  # what a pipeline with pipe.vae = AutoencoderTiny decodes (its scaling_factor is 1.0)
        expected = (VaeImageProcessor().postprocess(tae.decode(z).sample, output_type="np") * 255).round()
    assert [im.size for im in images] == [(64, 64), (64, 64)]
    np.testing.assert_array_equal(np.stack([np.asarray(im) for im in images]), expected.astype("uint8"))


def test_previews_during_sampling_and_the_full_decode_at_the_end(endpoints: tuple[str, str, Any]) -> None:
    full_url, tae_url, _ = endpoints
    vae = RemoteVAE(full_url, family="sd-v1", preview_endpoint=tae_url)
    seen: list[tuple[int, int]] = []
    embeds = torch.randn(1, 4, EMBED_DIM, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        final = _pipeline(vae)(
            prompt_embeds=embeds, negative_prompt_embeds=torch.zeros_like(embeds), height=64, width=64,
            num_inference_steps=3, guidance_scale=2.0, generator=torch.Generator().manual_seed(2),
            callback_on_step_end=vae.preview_callback(lambda step, ims: seen.append((step, len(ims))), every=2),
        ).images  # fmt: skip
    assert seen == [(0, 1), (2, 1)]
    assert len(final) == 1 and final[0].size == (64, 64)


def test_preview_without_an_endpoint_says_how_to_give_one() -> None:
    with pytest.raises(ValueError, match="preview_endpoint"):
        RemoteVAE("http://127.0.0.1:9", family="sd-v1").preview(torch.zeros(1, 4, 8, 8))
    with pytest.raises(ValueError, match="every must be"):
        RemoteVAE("http://127.0.0.1:9", preview_endpoint="http://127.0.0.1:9").preview_callback(print, every=0)


def test_a_preview_family_names_the_full_one_to_use(endpoints: tuple[str, str, Any]) -> None:
    _, tae_url, tae = endpoints
    with pytest.raises(ValueError, match="family='sd-v1', preview_endpoint="):
        RemoteVAE(tae_url, family="taesd")
    # the preview endpoint as a pipeline's only VAE: the pipeline divides by 0.18215, the endpoint multiplies back
    z = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    vae = RemoteVAE(tae_url, family="sd-v1")
    out = vae.decode(z / vae.config.scaling_factor).sample
    with torch.no_grad():
        expected = tae.decode(z).sample
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)
