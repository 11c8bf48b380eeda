"""A model directory with VAE weights but no handler.py serves a shipped handler (HF_TASK or config)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
import requests
import torch
from PIL import Image

from hf_remote_vae_toolkit import protocol
from hf_remote_vae_toolkit.testing import free_port, running_server
from hf_remote_vae_toolkit.vae.builtin import BUILTIN_HANDLERS, builtin_handler_class, detect_handler_name
from hf_remote_vae_toolkit.vae.families import FAMILIES


@pytest.fixture(scope="module")
def sd_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A plain diffusers VAE repo, as stabilityai/sd-vae-ft-mse is: config.json + weights, no handler."""
    path = tmp_path_factory.mktemp("sd-vae")
    FAMILIES["sd-v1"].build_random("tiny").save_pretrained(path)
    return path


def test_every_family_has_a_decode_handler_and_images_an_encoder() -> None:
    assert {"sd-v1-decode", "sd-v1-encode", "flux-encode", "wan-decode", "hunyuanvideo-decode"} <= set(BUILTIN_HANDLERS)
    assert "wan-encode" not in BUILTIN_HANDLERS
    with pytest.raises(ValueError, match="expected one of"):
        builtin_handler_class("sd-v1-upscale")


@pytest.mark.parametrize("name", ["sd-v1", "sdxl", "flux", "hunyuanvideo", "wan"])
def test_the_family_is_detected_from_config_json(tmp_path: Path, name: str) -> None:
    family = FAMILIES[name]
    family.vae_class()(**family.tiny_config).save_config(tmp_path / "vae")
    assert detect_handler_name(tmp_path) == f"{name}-decode"


def test_weights_without_handler_serve_the_detected_decoder(sd_weights: Path) -> None:
    with running_server(sd_weights) as url:
        latents = torch.randn(1, 4, 8, 8)
        r = requests.post(
            url,
            data=protocol.tensor_to_bytes(latents),
            params={"shape": [1, 4, 8, 8], "dtype": "float32", "output_type": "pil", "image_format": "png"},
            headers={"Content-Type": "tensor/binary", "Accept": "image/png"},
            timeout=60,
        )
    assert r.status_code == 200, r.text
    assert Image.open(io.BytesIO(r.content)).size == (64, 64)


def test_hf_task_picks_the_encoder(sd_weights: Path) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (10, 200, 30)).save(buf, format="PNG")
    with running_server(sd_weights, task="sd-v1-encode") as url:
        r = requests.post(url, data=buf.getvalue(), timeout=60)
    assert r.status_code == 200, r.text
    assert protocol.tensor_from_response(r.content, r.headers).shape == (1, 4, 6, 8)


def test_an_unknown_hf_task_fails_start_up_with_the_valid_names(sd_weights: Path) -> None:
    env = {**os.environ, "HF_MODEL_DIR": str(sd_weights), "HF_TASK": "text-classification", "PORT": str(free_port())}
    result = subprocess.run(
        [sys.executable, "-m", "hf_remote_vae_toolkit", "serve", "--host", "127.0.0.1"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode != 0
    assert "HF_TASK='text-classification' names no handler" in result.stderr
    assert "sd-v1-decode" in result.stderr
