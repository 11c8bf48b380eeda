"""Our handler repos on the REAL stock toolkit (the server of the stock Inference Endpoints image).

Every shipped handler is written out by ``init_repo`` (tiny random weights, the vendored packages), then
served twice: by the stock toolkit 0.5.6 from its own virtualenv (what the stock container runs: no
``hf_remote_vae_toolkit`` installed there, no PyAV, the ``ffmpeg`` program) and by our server. diffusers'
own ``remote_decode`` / ``remote_encode`` must get equal results from both.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
import torch
from diffusers.utils.remote_utils import remote_decode, remote_encode
from PIL import Image

from hf_remote_vae_toolkit.testing import running_server
from hf_remote_vae_toolkit.vae.repo import init_repo

from .conftest import STOCK_MISSING, stock_available, stock_servers

pytestmark = pytest.mark.slow

IMAGE_DECODERS = ("sd-v1-decode", "sdxl-decode", "flux-decode")
ENCODERS = ("sd-v1-encode", "sdxl-encode", "flux-encode")
VIDEO_DECODERS = ("hunyuanvideo-decode", "wan-decode")
ALL = (*IMAGE_DECODERS, *ENCODERS, *VIDEO_DECODERS)


def _ffmpeg() -> str:
    import imageio_ffmpeg

    return str(imageio_ffmpeg.get_ffmpeg_exe())


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, tuple[str, str]]]:
    """handler name -> (stock URL, our URL), both serving the same init-repo directory."""
    if not stock_available():
        pytest.skip(STOCK_MISSING)
    repos = {name: init_repo(name, tmp_path_factory.mktemp(name), random_weights="tiny") for name in ALL}
    with stock_servers(
        ALL, dirs={n: str(p) for n, p in repos.items()}, extra_env={"FFMPEG_BINARY": _ffmpeg()}
    ) as stock:
        from contextlib import ExitStack

        with ExitStack() as stack:
            ours = {name: stack.enter_context(running_server(path)) for name, path in repos.items()}
            yield {name: (stock[name], ours[name]) for name in ALL}


def test_a_repo_carries_what_the_stock_image_lacks(tmp_path: Path) -> None:
    repo = init_repo("sd-v1-decode", tmp_path / "repo", random_weights="tiny")
    assert (repo / "hf_remote_vae_toolkit" / "stock.py").is_file()
    assert (repo / "prometheus_client" / "__init__.py").is_file()
    assert not list(repo.rglob("__pycache__"))
    bare = init_repo("sd-v1-decode", tmp_path / "bare", random_weights="tiny", vendor=False)
    assert not (bare / "hf_remote_vae_toolkit").exists()


def _both(servers: dict[str, tuple[str, str]], name: str, call: Any) -> tuple[Any, Any]:
    stock, ours = servers[name]
    return call(stock), call(ours)


def _latents(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(sum(shape)))


@pytest.mark.parametrize("name", IMAGE_DECODERS)
@pytest.mark.parametrize(
    "kwargs",
    [
        {"output_type": "pil", "image_format": "png"},
        {"output_type": "pil", "image_format": "jpg"},
        {"output_type": "pt", "return_type": "pt", "partial_postprocess": False},
        {"output_type": "pt", "return_type": "pt", "partial_postprocess": True},
        {"output_type": "pt", "return_type": "pil", "partial_postprocess": True},
    ],
    ids=["png", "jpg", "raw", "uint8", "uint8-pil"],
)
def test_image_decode_equals_our_server(servers: Any, name: str, kwargs: dict[str, Any]) -> None:
    channels = 16 if name.startswith("flux") else 4
    z = _latents(1, channels, 8, 8)
    stock, ours = _both(servers, name, lambda url: remote_decode(endpoint=url, tensor=z, do_scaling=True, **kwargs))
    if isinstance(stock, torch.Tensor):
        assert torch.equal(stock, ours)
    else:
        assert np.array_equal(np.asarray(stock), np.asarray(ours))


def test_packed_flux_latents_equal_our_server(servers: Any) -> None:
    z = _latents(1, 16, 64)  # [B, (64/16)^2, 4*16]: packed latents of a 64x64 image
    stock, ours = _both(
        servers,
        "flux-decode",
        lambda url: remote_decode(
            endpoint=url, tensor=z, height=64, width=64, scaling_factor=0.3611, shift_factor=0.1159, image_format="png"
        ),
    )
    assert np.array_equal(np.asarray(stock), np.asarray(ours))


@pytest.mark.parametrize("name", ENCODERS)
def test_encode_equals_our_server(servers: Any, name: str) -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    stock, ours = _both(servers, name, lambda url: remote_encode(endpoint=url, image=image, scaling_factor=0.5))
    assert stock.shape == ours.shape and torch.equal(stock, ours)


def _frames(mp4: bytes) -> np.ndarray:
    with av.open(io.BytesIO(mp4)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


@pytest.mark.parametrize("name", VIDEO_DECODERS)
def test_video_decode_equals_our_server(servers: Any, name: str) -> None:
    z = _latents(1, 16, 3, 8, 8)  # 9 frames of 64x64
    raw = _both(servers, name, lambda url: remote_decode(endpoint=url, tensor=z, output_type="pt", return_type="pt"))
    assert raw[0].shape == raw[1].shape == (1, 3, 9, 64, 64)
    # the stock image's diffusers (0.33.1) against ours: HunyuanVideo is bit-equal, Wan's decoder was reworked
    # between the two (measured max difference 3.5e-6 on outputs within [-1, 1])
    torch.testing.assert_close(raw[0], raw[1], rtol=0, atol=1e-5)
    mp4 = _both(servers, name, lambda url: remote_decode(endpoint=url, tensor=z, output_type="mp4", return_type="mp4"))
    stock_frames, our_frames = _frames(mp4[0]), _frames(mp4[1])  # the ffmpeg program there, PyAV here
    assert stock_frames.shape == our_frames.shape == (9, 64, 64, 3)
    # two H.264 encoders at the same CRF do not give the same bytes: each must be as close to the decoded
    # frames as the other (tiny random weights decode to noise, the hardest case for 4:2:0 video)
    truth = ((raw[1][0].permute(1, 2, 3, 0) / 2 + 0.5).clamp(0, 1) * 255).round().numpy()
    stock_psnr, our_psnr = _psnr(stock_frames, truth), _psnr(our_frames, truth)
    assert stock_psnr > our_psnr - 1.5, (stock_psnr, our_psnr)


def _psnr(frames: np.ndarray, truth: np.ndarray) -> float:
    mse = float(np.mean((frames.astype(np.float64) - truth) ** 2))
    return float("inf") if mse == 0 else float(10 * np.log10(255**2 / mse))


def test_errors_keep_our_status_and_json_body(servers: Any) -> None:
    import requests

    for url in servers["sd-v1-decode"]:
        r = requests.post(
            url,
            data=b"\0" * 10,
            params={"shape": [1, 4, 8, 8], "dtype": "float32"},
            headers={"Content-Type": "tensor/binary"},
            timeout=60,
        )
        assert r.status_code == 400 and "bytes" in r.json()["error"]


def test_health_and_metrics_are_ours_on_the_stock_toolkit(servers: Any) -> None:
    import requests

    stock, _ = servers["sd-v1-decode"]
    assert requests.get(stock + "/health", timeout=30).text == "Ok"
    metrics = requests.get(stock + "/metrics", timeout=30).text
    # our Prometheus registry (the autoscaling gauges count our queue), not the toolkit's two-line text
    assert "inf_queue_size 0.0" in metrics and "hf_vae_requests_total" in metrics


def test_sigterm_stops_our_workers_on_the_stock_toolkit(tmp_path: Path) -> None:
    import subprocess

    from hf_remote_vae_toolkit.testing import free_port, wait_healthy

    from .conftest import STOCK_APP, STOCK_PYTHON

    if not stock_available():
        pytest.skip(STOCK_MISSING)
    repo = init_repo("sd-v1-decode", tmp_path / "repo", random_weights="tiny")
    port = free_port()
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "HF_MODEL_DIR": str(repo), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(
        [str(STOCK_PYTHON), "-m", "uvicorn", STOCK_APP, "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_healthy(f"http://127.0.0.1:{port}", timeout=300, proc=proc)
        proc.terminate()
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    # the stock toolkit's uvicorn ends by the signal (-15) or 0, depending on its version: not ours to change
    assert proc.returncode in (0, -15), out[-2000:]
    assert "Workers stopped: 0 queued request(s) answered 503, 0 worker(s) still busy" in out, out[-2000:]
    assert "Traceback" not in out
