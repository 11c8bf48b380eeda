"""Regression tests for defects of the data-dict side channels (each failed before the explicit parse step):
the request body cannot steer the server through keys it adds, results are labelled as what they are, a
stock handler's image result ignores our encoder parameters, and the settings refuse a zero timeout."""

from __future__ import annotations

import base64
import io
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import torch
from PIL import Image

from hf_remote_vae_toolkit import protocol
from hf_remote_vae_toolkit.contract import Output
from hf_remote_vae_toolkit.settings import Settings
from hf_remote_vae_toolkit.testing import running_server

TIMEOUT = 60


@pytest.fixture(scope="module")
def sd_url(model_repo: Callable[[str], Path]) -> Iterator[str]:
    with running_server(model_repo("sd-v1-decode")) as url:
        yield url


def _json_v0(**extra: Any) -> dict[str, Any]:
    z = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    return {
        "inputs": base64.b64encode(protocol.tensor_to_bytes(z)).decode(),
        "parameters": {"shape": [1, 4, 8, 8], "dtype": "float32"},
        **extra,
    }


def test_an_accept_key_in_the_body_does_not_override_the_negotiated_accept(sd_url: str) -> None:
    # before: data.setdefault("accept") kept the body's value, the decode ran as a PNG, then the answer
    # (a PIL image for a tensor/binary client) was a 406
    r = requests.post(
        sd_url, json=_json_v0(accept="image/png"), headers={"Accept": protocol.TENSOR_BINARY}, timeout=TIMEOUT
    )
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == protocol.TENSOR_BINARY
    images = protocol.tensor_from_response(r.content, r.headers)
    assert images.shape == (1, 3, 64, 64) and 0 <= float(images.min()) and float(images.max()) <= 1


def test_a_body_key_named_like_the_old_parse_cache_is_just_data(sd_url: str) -> None:
    # before: {"_hf_remote_vae_parsed": ...} was taken as the parsed job: 500 (AttributeError)
    r = requests.post(
        sd_url, json=_json_v0(_hf_remote_vae_parsed=1), headers={"Accept": protocol.IMAGE_PNG}, timeout=TIMEOUT
    )
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == protocol.IMAGE_PNG


class _Mp4Handler:
    """A stock handler returning pre-encoded bytes with their type."""

    def __call__(self, data: dict[str, Any]) -> Output:
        return Output(b"\x00\x00\x00\x18ftypisom", media_type=protocol.VIDEO_MP4)


@pytest.fixture(scope="module")
def mp4_url() -> Iterator[str]:
    with running_server(handler=_Mp4Handler()) as url:
        yield url


@pytest.mark.parametrize(
    ("accept", "status", "content_type"),
    [
        (None, 200, protocol.VIDEO_MP4),
        ("*/*", 200, protocol.VIDEO_MP4),
        (protocol.VIDEO_MP4, 200, protocol.VIDEO_MP4),
        (protocol.TEXT_PLAIN, 200, protocol.TEXT_PLAIN),  # how diffusers asks for MP4: its own type echoed
        (protocol.JSON, 406, protocol.JSON),  # before: MP4 bytes went out labelled application/json
        (protocol.IMAGE_PNG, 406, protocol.JSON),  # before: labelled image/png
    ],
)
def test_pre_encoded_bytes_are_labelled_as_what_they_are(
    mp4_url: str, accept: str | None, status: int, content_type: str
) -> None:
    headers = {"Accept": accept} if accept else {}
    r = requests.post(mp4_url, json={"inputs": 1}, headers=headers, timeout=TIMEOUT)
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == content_type
    if status == 200:
        assert r.content.startswith(b"\x00\x00\x00\x18ftyp")


def _red(data: dict[str, Any]) -> Image.Image:
    return Image.new("RGB", (8, 8), (255, 0, 0))


def test_a_stock_handlers_image_result_ignores_our_encoder_parameters() -> None:
    # before: ?jpeg_quality=abc reached the server's JPEG encoder after the work: 500 "the handler failed"
    with running_server(handler=_red) as url:
        r = requests.post(
            url, json={"inputs": 1}, params={"jpeg_quality": "abc"}, headers={"Accept": "image/jpeg"}, timeout=TIMEOUT
        )
    assert r.status_code == 200, r.text
    assert Image.open(io.BytesIO(r.content)).format == "JPEG"


@pytest.mark.parametrize("value", ["0", "-1"])
def test_a_zero_or_negative_request_timeout_is_refused_at_start_up(value: str) -> None:
    # before: REQUEST_TIMEOUT_S=0 silently became 300
    with pytest.raises(ValueError, match="REQUEST_TIMEOUT_S"):
        Settings.from_env({"REQUEST_TIMEOUT_S": value})
    assert Settings.from_env({"REQUEST_TIMEOUT_S": "2.5"}).request_timeout_s == 2.5


def test_help_does_not_import_torch() -> None:
    import subprocess

    code = (
        "import sys\nfrom hf_remote_vae_toolkit.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip().endswith("NO-TORCH"), out.stdout[-300:]
