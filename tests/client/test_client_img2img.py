"""RemoteVAE.encode (img2img) and remote_encode's extras against real sd-v1 encode and decode servers
sharing one set of tiny weights."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL, StableDiffusionImg2ImgPipeline
from PIL import Image

from hf_remote_vae_toolkit.client import RemoteVAE, remote_encode
from hf_remote_vae_toolkit.testing import running_server
from hf_remote_vae_toolkit.vae.loading import find_weights_dir
from hf_remote_vae_toolkit.vae.repo import init_repo

EMBED_DIM = 16  # as the tiny_sd_parts fixture builds the UNet


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, AutoencoderKL]]:
    """(decode URL, encode URL, the same VAE loaded locally)."""
    root = tmp_path_factory.mktemp("img2img")
    decode_dir = init_repo("sd-v1-decode", root / "decode", random_weights="tiny")
    encode_dir = init_repo("sd-v1-encode", root / "encode", weights=find_weights_dir(decode_dir))
    local = AutoencoderKL.from_pretrained(find_weights_dir(decode_dir)).eval()
    with running_server(decode_dir) as decode_url, running_server(encode_dir) as encode_url:
        yield decode_url, encode_url, local


def bright_image() -> torch.Tensor:
    """[1, 3, 64, 64] in [-1, 1] with no negative value: the case the server cannot infer."""
    return torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(4)) * 0.9 + 0.05


def test_encode_mode_equals_a_local_encode(servers) -> None:
    decode_url, encode_url, local = servers
    x = bright_image() * 2 - 1
    remote = RemoteVAE(decode_url, family="sd-v1", encode_endpoint=encode_url)
    with torch.no_grad():
        expected = local.encode(x).latent_dist.mode()
    got = remote.encode(x).latent_dist.mode()
    assert got.shape == (1, 4, 8, 8) and got.dtype == x.dtype
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    (as_tuple,) = remote.encode(x, return_dict=False)
    torch.testing.assert_close(as_tuple.mode(), expected, atol=1e-5, rtol=1e-5)


def test_encode_sample_is_seeded_by_the_generator(servers) -> None:
    decode_url, encode_url, _ = servers
    dist = RemoteVAE(decode_url, encode_endpoint=encode_url).encode(bright_image() * 2 - 1).latent_dist
    first = dist.sample(torch.Generator().manual_seed(7))
    again = dist.sample(torch.Generator().manual_seed(7))
    other = dist.sample(torch.Generator().manual_seed(8))
    assert torch.equal(first, again) and not torch.equal(first, other)
    assert not torch.equal(first, dist.mode())


def test_value_range_says_what_a_positive_tensor_means(servers) -> None:
    _, encode_url, local = servers
    x = bright_image()  # in [0, 1] and, read as [-1, 1], a dark-to-bright image: both are valid
    with torch.no_grad():
        as_unit = local.encode(x * 2 - 1).latent_dist.mode()
        as_signed = local.encode(x).latent_dist.mode()
    torch.testing.assert_close(remote_encode(encode_url, x), as_unit, atol=1e-5, rtol=1e-5)  # inferred: [0, 1]
    torch.testing.assert_close(remote_encode(encode_url, x, value_range="0,1"), as_unit, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(remote_encode(encode_url, x, value_range="-1,1"), as_signed, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="value_range"):
        remote_encode(encode_url, x, value_range="0,255")


def test_img2img_pipeline_runs_with_no_local_vae(servers, tiny_sd_parts) -> None:
    decode_url, encode_url, _ = servers
    remote = RemoteVAE(decode_url, family="sd-v1", encode_endpoint=encode_url)
    pipe = tiny_sd_parts.make(StableDiffusionImg2ImgPipeline, remote)
    init = Image.fromarray((bright_image()[0].permute(1, 2, 0).numpy() * 255).astype("uint8"))
    embeds = torch.randn(1, 4, EMBED_DIM, generator=torch.Generator().manual_seed(1))

    def run() -> np.ndarray:
        with torch.no_grad():
            return pipe(
                prompt_embeds=embeds,
                negative_prompt_embeds=torch.zeros_like(embeds),
                image=init,
                strength=0.5,
                num_inference_steps=4,
                guidance_scale=2.0,
                output_type="np",
                generator=torch.Generator().manual_seed(2),
            ).images

    first, second = run(), run()
    assert first.shape == (1, 64, 64, 3)
    np.testing.assert_array_equal(first, second)  # the remote draw follows the generator's seed
