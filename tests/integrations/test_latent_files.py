"""Saved latents -> images: ``load_latent_file`` and ``hf-remote-vae decode`` on ComfyUI ``.latent``,
torch ``.pt`` and safetensors files, against the real sd-v1 handler (tiny random weights).

The recovery path after a local out-of-memory: whatever the file, the PNG must equal a local decode of
the latents in the VAE's own space (ComfyUI files as they are; pipeline latents divided by 0.18215).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL
from diffusers.image_processor import VaeImageProcessor
from PIL import Image
from safetensors.torch import save_file

from hf_remote_vae_toolkit.cli import main
from hf_remote_vae_toolkit.client._latent_files import load_latent_file
from hf_remote_vae_toolkit.testing import running_server
from hf_remote_vae_toolkit.vae.repo import init_repo

SD_SCALE = 0.18215


@pytest.fixture(scope="module")
def sd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Any]]:
    repo = init_repo("sd-v1-decode", tmp_path_factory.mktemp("sd"), random_weights="tiny")
    vae = AutoencoderKL.from_pretrained(str(repo), torch_dtype=torch.float32).eval()
    with running_server(repo) as url:
        yield url, vae


def _x(batch: int = 1, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 4, 8, 8, generator=torch.Generator().manual_seed(seed))


def _local_png(vae: Any, vae_space: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        raw = vae.decode(vae_space).sample
    return (VaeImageProcessor().postprocess(raw, output_type="np") * 255).round().astype("uint8")


def _decode(url: str, src: Path, out: Path, *extra: str) -> int:
    return main(["decode", str(src), "--endpoint", url, "-o", str(out), "--no-progress", "--retries", "0", *extra])


def save_comfyui_latent(path: Path, samples: torch.Tensor, *, marker: bool = True) -> Path:
    """What ComfyUI's Save Latent writes: safetensors with latent_tensor and the version marker."""
    tensors = {"latent_tensor": samples.contiguous()}
    if marker:
        tensors["latent_format_version_0"] = torch.tensor([])
    save_file(tensors, path)
    return path


def test_a_comfyui_latent_decodes_with_no_scaling(sd: tuple[str, Any], tmp_path: Path, capsys) -> None:
    url, vae = sd
    x = _x()  # a ComfyUI LATENT's samples: the VAE's own space
    src = save_comfyui_latent(tmp_path / "ComfyUI_00001_.latent", x)
    assert load_latent_file(src).space == "vae"
    assert _decode(url, src, tmp_path / "out.png") == 0, capsys.readouterr().err
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "out.png")), _local_png(vae, x)[0])


def test_a_legacy_comfyui_latent_is_divided_by_the_sd_factor(sd: tuple[str, Any], tmp_path: Path) -> None:
    url, vae = sd
    stored = _x(seed=1)  # files from before the version marker hold samples * 0.18215
    src = save_comfyui_latent(tmp_path / "old.latent", stored, marker=False)
    loaded = load_latent_file(src)
    torch.testing.assert_close(loaded.tensors["samples"], stored / SD_SCALE, rtol=0, atol=0)
    assert _decode(url, src, tmp_path / "old.png") == 0
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "old.png")), _local_png(vae, stored / SD_SCALE)[0])


def test_pipeline_latents_in_a_pt_file_get_the_models_scaling(sd: tuple[str, Any], tmp_path: Path) -> None:
    url, vae = sd
    z = _x(batch=2, seed=2)  # pipe(..., output_type="latent").images, torch.save-d
    torch.save(z, tmp_path / "latents.pt")
    assert load_latent_file(tmp_path / "latents.pt").space == "pipeline"
    assert _decode(url, tmp_path / "latents.pt", tmp_path / "img.png") == 0
    expected = _local_png(vae, z / SD_SCALE)
    for i in range(2):
        np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / f"img_{i}.png")), expected[i])


def test_a_saved_comfyui_latent_dict_and_a_dict_of_tensors(tmp_path: Path) -> None:
    x = _x(seed=3)
    torch.save({"samples": x, "batch_index": [0]}, tmp_path / "comfy.pt")
    loaded = load_latent_file(tmp_path / "comfy.pt")
    assert loaded.space == "vae" and list(loaded.tensors) == ["samples"]
    torch.save({"a": x, "b": x.double(), "note": "x"}, tmp_path / "many.pt")
    loaded = load_latent_file(tmp_path / "many.pt")
    assert loaded.space == "pipeline" and sorted(loaded.tensors) == ["a", "b"]
    assert loaded.tensors["b"].dtype == torch.float32
    save_file({"latent_tensor": x, "latent_format_version_0": torch.tensor([])}, tmp_path / "renamed.safetensors")
    assert load_latent_file(tmp_path / "renamed.safetensors").format == "comfyui"


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("junk.pt", b"not a pickle", "not a readable torch file"),
        ("junk.latent", b"\x00\x01", "not a readable safetensors file"),
        ("latents.npy", b"", "cannot tell the format"),
    ],
)
def test_unreadable_files_are_named_with_the_reason(tmp_path: Path, name: str, content: bytes, message: str) -> None:
    (tmp_path / name).write_bytes(content)
    with pytest.raises(ValueError, match=message):
        load_latent_file(tmp_path / name)


def test_a_pickled_object_names_what_to_save_instead(tmp_path: Path) -> None:
    from diffusers.pipelines.pipeline_utils import ImagePipelineOutput

    torch.save(ImagePipelineOutput(images=_x()), tmp_path / "out.pt")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"torch\.save\(latents, path\)"):
        load_latent_file(tmp_path / "out.pt")


def test_the_cli_refuses_scaling_flags_for_a_comfyui_latent(tmp_path: Path, capsys) -> None:
    src = save_comfyui_latent(tmp_path / "a.latent", _x())
    code = _decode("http://127.0.0.1:9", src, tmp_path / "a.png", "--scaling-factor", "0.18215")
    assert code == 2
    assert "already in the VAE's latent space" in capsys.readouterr().err


def test_the_cli_reports_an_unreadable_file(tmp_path: Path, capsys) -> None:
    (tmp_path / "bad.pt").write_bytes(b"nope")
    assert _decode("http://127.0.0.1:9", tmp_path / "bad.pt", tmp_path / "a.png") == 2
    assert "not a readable torch file" in capsys.readouterr().err


def test_a_comfyui_video_latent_decodes_to_mp4(tmp_path: Path) -> None:
    import av

    repo = init_repo("hunyuanvideo-decode", tmp_path / "hv", random_weights="tiny")
    src = save_comfyui_latent(tmp_path / "video_00001_.latent", torch.randn(1, 16, 2, 4, 4))
    with running_server(repo) as url:
        assert _decode(url, src, tmp_path / "video.mp4") == 0
    with av.open(str(tmp_path / "video.mp4")) as container:
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    assert len(frames) == 5 and frames[0].shape == (32, 32, 3)  # 1 + 4 * (2 - 1) frames of 8 * 4 pixels
