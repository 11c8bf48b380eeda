"""The drop-in where diffusers' own callers need it: HunyuanVideo's ``output_type="mp4"`` pattern,
diffusers' FutureWarnings, and numpy latents (the light client install has no torch). Real servers
over tiny random-weight VAEs of the real diffusers classes, and diffusers' own client beside ours."""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable
from typing import Any

import av
import numpy as np
import pytest
import torch
from diffusers.utils import remote_utils as reference
from PIL import Image

from hf_remote_vae_toolkit.client import decode_many, remote_decode, remote_encode


def _frames(mp4: bytes) -> tuple[int, int, int]:
    with av.open(io.BytesIO(mp4)) as container:
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    return len(frames), frames[0].shape[0], frames[0].shape[1]


def test_hunyuanvideo_example_pattern_returns_mp4_bytes(video_decode: str) -> None:
    """diffusers' HunyuanVideo examples: ``remote_decode(endpoint, latents, output_type="mp4")`` with
    the default ``return_type="pil"``. diffusers' own client crashes on its own example; ours returns
    the MP4 bytes the example then writes to a file."""
    latents = torch.randn(1, 16, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    with pytest.raises(UnboundLocalError):
        reference.remote_decode(endpoint=video_decode, tensor=latents, output_type="mp4")
    with pytest.warns(FutureWarning, match="do_scaling"):  # diffusers warns for this call too
        video = remote_decode(endpoint=video_decode, tensor=latents, output_type="mp4")
    assert isinstance(video, bytes) and video[4:8] == b"ftyp"
    assert _frames(video) == (9, 64, 64)
    for return_type in ("mp4", "pt"):
        same = remote_decode(video_decode, latents, output_type="mp4", return_type=return_type, scaling_factor=1.0)
        assert isinstance(same, bytes) and _frames(same) == (9, 64, 64)


def test_return_type_mp4_still_needs_output_type_mp4() -> None:
    with pytest.raises(ValueError, match="output_type='mp4'"):
        remote_decode("http://127.0.0.1:9", torch.zeros(1, 4, 8, 8), output_type="pt", return_type="mp4")


def _warnings_of(call: Callable[[], Any]) -> list[tuple[type[Warning], str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        call()
    return [(w.category, str(w.message)) for w in caught if issubclass(w.category, FutureWarning)]


WARNING_CASES = {
    "default call (no scaling_factor)": {},
    "scaling_factor": {"scaling_factor": 0.18215},
    "shift_factor only": {"shift_factor": 0.1},
    "do_scaling=False": {"do_scaling": False},
    "base64 input": {"scaling_factor": 0.18215, "input_tensor_type": "base64"},
    "base64 output": {"scaling_factor": 0.18215, "output_tensor_type": "base64"},
    "both base64, default scaling": {"input_tensor_type": "base64", "output_tensor_type": "base64"},
}


@pytest.mark.parametrize("kwargs", list(WARNING_CASES.values()), ids=list(WARNING_CASES))
def test_future_warnings_are_diffusers_own(sd_decode: str, kwargs: dict[str, Any]) -> None:
    z = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    theirs = _warnings_of(lambda: reference.remote_decode(sd_decode, z, image_format="png", **kwargs))
    ours = _warnings_of(lambda: remote_decode(sd_decode, z, image_format="png", **kwargs))
    assert ours == theirs
    expected = int("scaling_factor" not in kwargs and kwargs.get("do_scaling", True))
    expected += sum(kwargs.get(k) == "base64" for k in ("input_tensor_type", "output_tensor_type"))
    assert len(ours) == expected


def test_the_warning_points_at_the_callers_line(sd_decode: str) -> None:
    with pytest.warns(FutureWarning) as record:
        remote_decode(sd_decode, torch.zeros(1, 4, 8, 8))
    assert record[0].filename == __file__


def test_decode_many_does_not_warn_for_the_models_own_scaling(sd_decode: str) -> None:
    z = torch.randn(1, 4, 8, 8)
    assert _warnings_of(lambda: decode_many(sd_decode, [z], progress=False)) == []


def test_an_unknown_tensor_type_is_refused() -> None:
    with pytest.raises(ValueError, match="binary"):
        remote_decode("http://127.0.0.1:9", torch.zeros(1, 4, 8, 8), input_tensor_type="json")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"image_format": "png"},
        {"output_type": "pt", "return_type": "pt"},
        {"output_type": "pt", "return_type": "pt", "partial_postprocess": True},
        {"output_type": "pt", "return_type": "pil", "partial_postprocess": True},
        {"output_type": "pil", "return_type": "pt"},
    ],
    ids=["pil", "pt", "uint8", "uint8-pil", "pil-pt"],
)
def test_numpy_latents_give_what_torch_latents_give(sd_decode: str, kwargs: dict[str, Any]) -> None:
    z = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    ours = remote_decode(sd_decode, z.numpy(), scaling_factor=0.18215, **kwargs)
    expected = remote_decode(sd_decode, z, scaling_factor=0.18215, **kwargs)
    if isinstance(expected, torch.Tensor):
        assert isinstance(ours, np.ndarray) and ours.dtype == expected.numpy().dtype
        np.testing.assert_array_equal(ours, expected.numpy())
    else:
        images = ours if isinstance(ours, list) else [ours]
        assert all(isinstance(image, Image.Image) for image in images)
        others = expected if isinstance(expected, list) else [expected]
        assert [image.tobytes() for image in images] == [image.tobytes() for image in others]


def test_numpy_bfloat16_answers_become_float32() -> None:
    from hf_remote_vae_toolkit.client._arrays import array_from_response

    values = torch.tensor([[1.5, -2.25], [3.0e-3, 65504.0]], dtype=torch.bfloat16)
    body = values.view(torch.int16).numpy().tobytes()
    out = array_from_response(body, {"shape": "[2,2]", "dtype": "bfloat16"}, "numpy")
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, values.float().numpy())


def test_numpy_bad_dtype_names_the_accepted_ones() -> None:
    with pytest.raises(ValueError, match="float16"):
        remote_decode("http://127.0.0.1:9", np.zeros((1, 4, 8, 8)), scaling_factor=1.0)  # float64


def test_numpy_encode(sd_encode: str) -> None:
    x = torch.rand(1, 3, 32, 24, generator=torch.Generator().manual_seed(3))
    ours = remote_encode(sd_encode, x.numpy())
    assert isinstance(ours, np.ndarray)
    np.testing.assert_array_equal(ours, remote_encode(sd_encode, x).numpy())
