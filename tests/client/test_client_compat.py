"""Our remote_decode / remote_encode return exactly what diffusers' functions return (both are run),
against the real SD v1 and Flux handlers (tiny random weights) on loopback."""

from __future__ import annotations

import pytest
import torch
from diffusers.image_processor import VaeImageProcessor
from diffusers.utils import remote_utils as reference
from PIL import Image

from hf_remote_vae_toolkit.client import remote_decode, remote_encode


def assert_same(ours, theirs) -> None:
    assert type(ours) is type(theirs)
    if isinstance(theirs, list):
        assert len(ours) == len(theirs)
        for a, b in zip(ours, theirs):
            assert_same(a, b)
    elif isinstance(theirs, torch.Tensor):
        assert ours.dtype == theirs.dtype and ours.shape == theirs.shape
        assert torch.equal(ours, theirs)
    elif isinstance(theirs, Image.Image):
        assert (ours.mode, ours.size, ours.format) == (theirs.mode, theirs.size, theirs.format)
        assert ours.tobytes() == theirs.tobytes()
    else:
        assert ours == theirs


PROCESSOR = VaeImageProcessor(vae_scale_factor=8)
DECODE_CASES = {
    "defaults-jpeg": {"scaling_factor": 0.18215},
    "png": {"scaling_factor": 0.18215, "image_format": "png"},
    "legacy-do-scaling": {},
    "no-scaling": {"do_scaling": False, "image_format": "png"},
    "pt-raw": {"output_type": "pt", "return_type": "pt", "scaling_factor": 0.18215},
    "pt-uint8": {"output_type": "pt", "return_type": "pt", "partial_postprocess": True, "do_scaling": False},
    "pt-uint8-to-pil": {"output_type": "pt", "return_type": "pil", "partial_postprocess": True},
    "pt-processor-to-pil": {"output_type": "pt", "return_type": "pil", "processor": PROCESSOR},
    "pil-processor": {"output_type": "pil", "return_type": "pil", "processor": PROCESSOR, "do_scaling": False},
    "pil-processor-pt": {"output_type": "pil", "return_type": "pt", "processor": PROCESSOR},
    "height-width-ignored-for-4d": {"scaling_factor": 0.18215, "height": 64, "width": 64, "image_format": "png"},
}


@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("case", sorted(DECODE_CASES))
def test_decode_matches_diffusers(sd_decode: str, case: str, dtype: torch.dtype, batch: int) -> None:
    kwargs = DECODE_CASES[case]
    z = torch.randn(batch, 4, 8, 8, generator=torch.Generator().manual_seed(batch)).to(dtype)
    assert_same(remote_decode(sd_decode, z, **kwargs), reference.remote_decode(sd_decode, z, **kwargs))


def test_decode_positional_arguments_match(sd_decode: str) -> None:
    z = torch.randn(1, 4, 8, 8)
    args = (None, True, 0.18215, None, "pt", "pt", "jpg", True)
    assert_same(remote_decode(sd_decode, z, *args), reference.remote_decode(sd_decode, z, *args))


def test_packed_flux_latents_match(flux_decode: str) -> None:
    z = torch.randn(1, 16, 64)  # 64x64 pixels: 4x4 patches of 2x2x16
    kwargs = {"scaling_factor": 0.3611, "shift_factor": 0.1159, "height": 64, "width": 64}
    for extra in ({}, {"output_type": "pt", "return_type": "pt"}, {"image_format": "png"}):
        theirs = reference.remote_decode(flux_decode, z.to(torch.bfloat16), **kwargs, **extra)
        assert_same(remote_decode(flux_decode, z.to(torch.bfloat16), **kwargs, **extra), theirs)


def test_non_contiguous_latents_are_sent_as_their_values(sd_decode: str) -> None:
    z = torch.randn(1, 4, 8, 8).transpose(-1, -2)
    kwargs = {"output_type": "pt", "return_type": "pt", "do_scaling": False}
    ours = remote_decode(sd_decode, z, **kwargs)
    assert torch.equal(ours, remote_decode(sd_decode, z.contiguous(), **kwargs))
    # the reference sends storage order, i.e. the untransposed latents
    assert not torch.equal(ours, reference.remote_decode(sd_decode, z, **kwargs))


def test_pil_to_pt_without_processor_works_where_the_reference_crashes(sd_decode: str) -> None:
    z = torch.randn(1, 4, 8, 8)
    with pytest.raises(UnboundLocalError):
        reference.remote_decode(sd_decode, z, output_type="pil", return_type="pt")
    ours = remote_decode(sd_decode, z, output_type="pil", return_type="pt")
    assert_same(ours, reference.remote_decode(sd_decode, z, output_type="pil", return_type="pt", processor=PROCESSOR))
    assert ours.min() >= 0 and ours.max() <= 1


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"output_type": "pil", "return_type": "mp4"}, "mp4"),
        ({"output_type": "pt", "return_type": "pil"}, "processor"),
        ({"output_type": "png"}, "output_type"),
        ({"image_format": "webp"}, "image_format"),
    ],
)
def test_combinations_that_make_no_sense_raise_value_error_before_sending(kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        remote_decode("http://127.0.0.1:9", torch.zeros(1, 4, 8, 8), **kwargs)


def test_bad_tensors_raise_value_error_before_sending() -> None:
    with pytest.raises(ValueError, match="height"):
        remote_decode("http://127.0.0.1:9", torch.zeros(1, 16, 64), height=64)
    with pytest.raises(ValueError, match="float64"):
        remote_decode("http://127.0.0.1:9", torch.zeros(1, 4, 8, 8, dtype=torch.float64))


@pytest.mark.parametrize("factors", [{}, {"scaling_factor": 0.18215}, {"scaling_factor": 0.3611, "shift_factor": 0.1}])
def test_encode_matches_diffusers(sd_encode: str, factors: dict) -> None:
    gen = torch.Generator().manual_seed(0)
    image = Image.fromarray((torch.rand(64, 48, 3, generator=gen) * 255).to(torch.uint8).numpy())
    assert_same(remote_encode(sd_encode, image, **factors), reference.remote_encode(sd_encode, image, **factors))
    x = torch.rand(1, 3, 64, 48, generator=gen)
    assert_same(remote_encode(sd_encode, x, **factors), reference.remote_encode(sd_encode, x, **factors))
    assert remote_encode(sd_encode, x).shape == (1, 4, 8, 6)


def test_encode_non_contiguous_tensor_is_sent_as_its_values(sd_encode: str) -> None:
    x = torch.rand(1, 3, 48, 64).transpose(-1, -2)
    assert torch.equal(remote_encode(sd_encode, x), remote_encode(sd_encode, x.contiguous()))
