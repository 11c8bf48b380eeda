"""The light client install (``pip install ".[client]"``) in a fresh virtualenv: no torch, diffusers,
starlette or uvicorn; it decodes numpy latents against a real server (run by this test process) and its
``hf-remote-vae`` names the extra to install for what it cannot do."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import venv
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hf_remote_vae_toolkit.client import remote_decode
from hf_remote_vae_toolkit.testing import running_server
from hf_remote_vae_toolkit.vae.repo import init_repo

ROOT = Path(__file__).resolve().parents[2]
SERVER_ONLY = ("torch", "diffusers", "starlette", "uvicorn", "prometheus_client")

CLIENT_SCRIPT = """
import importlib.util, json, sys
import numpy as np
from hf_remote_vae_toolkit.client import decode_many, remote_decode

url = sys.argv[1]
absent = [m for m in {server_only!r} if importlib.util.find_spec(m) is not None]
latents = np.zeros((1, 4, 8, 8), dtype=np.float32)
image = remote_decode(url, latents, scaling_factor=0.18215, image_format="png")
image.save("light.png")
raw = remote_decode(url, latents, scaling_factor=0.18215, output_type="pt", return_type="pt")
many = decode_many(url, [latents, latents + 1], progress=False, scaling_factor=0.18215, output_type="pt", return_type="pt")
print(json.dumps({{
    "present_server_modules": absent,
    "torch_imported": "torch" in sys.modules,
    "raw": [type(raw).__name__, str(raw.dtype), list(raw.shape)],
    "many": [type(m).__name__ for m in many],
    "raw_sum": float(raw.astype("float64").sum()),
}}))
"""


@pytest.fixture(scope="module")
def light_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("light")
    source = root / "src-copy"  # install from a copy: the build writes egg-info next to the sources
    source.mkdir()
    for name in ("setup.py", "pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("*.egg-info", "__pycache__"))
    env_dir = root / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    result = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", f"{source}[client]"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return env_dir


@pytest.fixture(scope="module")
def sd_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    repo = init_repo("sd-v1-decode", tmp_path_factory.mktemp("sd") / "repo", random_weights="tiny")
    with running_server(repo) as url:
        yield url


@pytest.mark.slow
def test_light_client_decodes_without_the_server_stack(light_venv: Path, sd_url: str, tmp_path: Path) -> None:
    python = light_venv / "bin" / "python"
    installed = subprocess.run(
        [str(python), "-m", "pip", "list", "--format=json"], capture_output=True, text=True, check=True
    ).stdout
    names = {p["name"].lower().replace("_", "-") for p in json.loads(installed)}
    assert names.isdisjoint({"torch", "diffusers", "starlette", "uvicorn", "prometheus-client"}), names
    assert {"hf-remote-vae-toolkit", "requests", "pillow", "numpy", "huggingface-hub", "safetensors"} <= names

    script = CLIENT_SCRIPT.format(server_only=SERVER_ONLY)
    result = subprocess.run(
        [str(python), "-c", script, sd_url], cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["present_server_modules"] == [] and report["torch_imported"] is False
    assert report["raw"] == ["ndarray", "float32", [1, 3, 64, 64]]
    assert report["many"] == ["ndarray", "ndarray"]

    # the same pixels and values as the full install's client with torch tensors
    zeros = torch.zeros(1, 4, 8, 8)
    expected = remote_decode(sd_url, zeros, scaling_factor=0.18215, image_format="png")
    with Image.open(tmp_path / "light.png") as png:
        assert np.array_equal(np.asarray(png.convert("RGB")), np.asarray(expected))
    raw = remote_decode(sd_url, zeros, scaling_factor=0.18215, output_type="pt", return_type="pt")
    assert report["raw_sum"] == pytest.approx(float(raw.double().sum()), abs=1e-6)


@pytest.mark.slow
def test_light_cli_helps_and_names_the_extra(light_venv: Path) -> None:
    cli = light_venv / "bin" / "hf-remote-vae"
    assert subprocess.run([str(cli), "--help"], capture_output=True, text=True, check=False).returncode == 0
    serve = subprocess.run([str(cli), "serve"], capture_output=True, text=True, timeout=60, check=False)
    assert serve.returncode == 2
    message = re.fullmatch(
        r"hf-remote-vae serve: this install has no (\w+); to fix: pip install 'hf-remote-vae-toolkit\[server\]' "
        r"\(from a checkout: pip install '\.\[server\]'\)",
        serve.stderr.strip(),
    )
    assert message and message.group(1) in (*SERVER_ONLY, "safetensors", "huggingface_hub"), serve.stderr
    decode = subprocess.run(
        [str(cli), "decode", "x.safetensors", "--endpoint", "http://127.0.0.1:9", "-o", "x.png"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert decode.returncode == 2 and "pip install 'hf-remote-vae-toolkit[client]' torch" in decode.stderr
    assert "Traceback" not in decode.stderr
