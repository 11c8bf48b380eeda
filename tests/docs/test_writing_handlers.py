"""The worked example of docs/writing-handlers.md: a TAESD (``AutoencoderTiny``) decode handler.

Follows the guide's steps: copy ``docs/examples/taesd-decode/`` into a model repo, save a tiny
random ``AutoencoderTiny`` next to it, serve the repo with the real server and decode through it with
diffusers' own client; the results must equal a local decode of the same weights. This file is also
the template the guide points to for testing a handler of your own.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
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
from PIL import Image

from hf_remote_vae_toolkit import protocol
from hf_remote_vae_toolkit.contract import RequestInfo, WorkerInfo
from hf_remote_vae_toolkit.testing import running_server

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "docs" / "examples" / "taesd-decode"
GUIDE = REPO / "docs" / "writing-handlers.md"


def _import_handler_module(path: Path) -> Any:
    spec = importlib.util.spec_from_file_location("taesd_example_handler", path / "handler.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def model_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Step 3 of the guide: the handler files plus tiny random weights saved with save_pretrained."""
    repo = tmp_path_factory.mktemp("taesd-decode")
    for name in ("handler.py", "requirements.txt", "README.md"):
        shutil.copy2(EXAMPLE / name, repo / name)
    _import_handler_module(repo).TAESD.build_random("tiny", seed=0).save_pretrained(str(repo))
    return repo


@pytest.fixture(scope="module")
def url(model_repo: Path) -> Iterator[str]:
    with running_server(model_repo) as base:  # loads handler.py, warms it up, opens the port
        yield base


@pytest.fixture(scope="module")
def local_vae(model_repo: Path) -> Any:
    return AutoencoderTiny.from_pretrained(str(model_repo), torch_dtype=torch.float32).eval()


def _latents(batch: int = 1) -> torch.Tensor:
    return torch.randn(batch, 4, 8, 8, generator=torch.Generator().manual_seed(batch))


def _local_uint8(vae: Any, z: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        raw = vae.decode(z).sample
    return (VaeImageProcessor().postprocess(raw, output_type="np") * 255).round().astype("uint8")


def test_png_equals_a_local_decode(url: str, local_vae: Any) -> None:
    z = _latents()
    image = remote_decode(endpoint=f"{url}/", tensor=z, image_format="png")
    assert isinstance(image, Image.Image) and image.size == (64, 64)
    np.testing.assert_array_equal(np.asarray(image), _local_uint8(local_vae, z)[0])


def test_batched_uint8_tensor_equals_a_local_decode(url: str, local_vae: Any) -> None:
    z = _latents(batch=2)
    pixels = remote_decode(endpoint=f"{url}/", tensor=z, output_type="pt", partial_postprocess=True, return_type="pt")
    assert tuple(pixels.shape) == (2, 64, 64, 3)
    np.testing.assert_array_equal(pixels.numpy(), _local_uint8(local_vae, z))


def test_wrong_latents_are_a_400_naming_the_family(url: str) -> None:
    z = torch.zeros(1, 16, 8, 8)  # Flux-shaped latents sent to a TAESD endpoint
    r = requests.post(
        url,
        data=z.numpy().tobytes(),
        params=protocol.encode_query({"shape": [1, 16, 8, 8], "dtype": "float32"}),
        headers={"Content-Type": "tensor/binary", "Accept": "image/png"},
        timeout=30,
    )
    assert r.status_code == 400
    assert "taesd latents have 4 channels" in r.json()["error"]


def test_memory_estimate_is_the_handlers_own(model_repo: Path) -> None:
    module = _import_handler_module(model_repo)
    handler = module.EndpointHandler(str(model_repo))
    data = {"inputs": torch.zeros(2, 4, 16, 16), "parameters": {}}
    job = handler.parse(data, RequestInfo(body_parameters=True))
    assert handler.estimate_memory(job) == module.BYTES_PER_PIXEL_PER_ITEM * 4 * 2 * 128 * 128  # float32 on a CPU
    handler.setup(WorkerInfo(memory_budget_bytes=1))  # over budget: still untiled (AutoencoderTiny has no tiling)
    out = handler({**data, "parameters": {"output_type": "pt"}})
    assert tuple(out.shape) == (2, 3, 128, 128)


def test_every_path_the_guide_names_exists() -> None:
    text = GUIDE.read_text()
    paths = set(re.findall(r"`((?:docs|src|tests|docker|custom_handlers)/[\w./-]+)`", text))
    assert paths, "the guide names no project files?"
    missing = sorted(p for p in paths if not (REPO / p.rstrip("/")).exists())
    assert not missing, f"docs/writing-handlers.md names files that do not exist: {missing}"


def test_example_readme_is_a_model_card() -> None:
    card = (EXAMPLE / "README.md").read_text()
    assert card.startswith("---\n")  # Hub model-card metadata
    assert "AutoencoderTiny" in card
