"""Unit tests of the shared image-VAE code: scaling rules, unpacking, rounding, validation, memory."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from diffusers.image_processor import VaeImageProcessor
from PIL import Image

from hf_remote_vae_toolkit import media
from hf_remote_vae_toolkit.errors import InvalidRequest
from hf_remote_vae_toolkit.vae import latents as L
from hf_remote_vae_toolkit.vae.config import DEFAULT_MAX_PIXELS, VaeConfig, parse_max_pixels
from hf_remote_vae_toolkit.vae.families import get_family
from hf_remote_vae_toolkit.vae.loading import find_weights_dir, load_vae, resolve_dtype
from hf_remote_vae_toolkit.vae.memory import GiB, estimate_decode_bytes, estimate_tiled_decode_bytes
from hf_remote_vae_toolkit.vae.postprocess import to_uint8, to_unit
from hf_remote_vae_toolkit.vae.repo import family_for_handler, init_repo


def pack(z: torch.Tensor) -> torch.Tensor:
    """Flux's packing, written out: [B, C, h, w] -> [B, (h/2)(w/2), 4C] (2x2 patches, channel-major)."""
    b, c, h, w = z.shape
    return z.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5).reshape(b, (h // 2) * (w // 2), c * 4)


class FakeLoaded:
    """Just the numbers the scaling rules read."""

    def __init__(self, family: str, **overrides: Any) -> None:
        fam = get_family(family)
        self.family = fam
        self.latent_channels = fam.latent_channels
        self.scaling_factor = overrides.get("scaling_factor", fam.scaling_factor)
        self.shift_factor = overrides.get("shift_factor", fam.shift_factor)
        self.latents_mean = fam.latents_mean
        self.latents_std = fam.latents_std


# --------------------------------------------------------------------------- scaling


def test_explicit_factors_win_over_do_scaling() -> None:
    s = L.resolve_decode_scaling({"scaling_factor": 0.5, "do_scaling": True}, FakeLoaded("flux"))
    assert s == L.Scaling("explicit", scale=0.5, shift=None)
    z = torch.full((1, 16, 2, 2), 1.0)
    assert torch.equal(L.apply_decode_scaling(z, s), z / 0.5)


def test_do_scaling_uses_the_model_config() -> None:
    s = L.resolve_decode_scaling({"do_scaling": True}, FakeLoaded("flux"))
    assert (s.kind, s.scale, s.shift) == ("model", 0.3611, 0.1159)
    z = torch.randn(1, 16, 2, 2)
    assert torch.equal(L.apply_decode_scaling(z, s), z / 0.3611 + 0.1159)


def test_wan_model_scaling_is_per_channel() -> None:
    s = L.resolve_decode_scaling({"do_scaling": True}, FakeLoaded("wan"))
    z = torch.zeros(1, 16, 1, 2, 2)
    out = L.apply_decode_scaling(z, s)
    assert torch.allclose(out[0, :, 0, 0, 0], torch.tensor(get_family("wan").latents_mean))


@pytest.mark.parametrize("params", [{}, {"do_scaling": False}])
def test_no_scaling(params: dict[str, Any]) -> None:
    assert L.resolve_decode_scaling(params, FakeLoaded("sd-v1")).kind == "none"


def test_encode_scaling_inverts_decode_scaling() -> None:
    s = L.Scaling("explicit", scale=0.3611, shift=0.1159)
    z = torch.randn(1, 16, 4, 4, dtype=torch.float64)
    assert torch.allclose(L.apply_decode_scaling(L.apply_encode_scaling(z, s), s), z)


@pytest.mark.parametrize("params", [{"scaling_factor": "x"}, {"scaling_factor": 0}, {"do_scaling": "yes"}])
def test_bad_scaling_params(params: dict[str, Any]) -> None:
    with pytest.raises(InvalidRequest):
        L.resolve_decode_scaling(params, FakeLoaded("sd-v1"))


# --------------------------------------------------------------------------- shapes and unpacking


def test_unpack_inverts_flux_packing() -> None:
    z = torch.randn(2, 16, 8, 6)
    packed = pack(z)
    assert packed.shape == (2, 12, 64)
    assert torch.equal(L.unpack_latents(packed, 64, 48), z)


def test_protocol_example_shape() -> None:
    shape, packed = L.image_latent_shape((1, 4096, 64), {"height": 1024, "width": 1024}, FakeLoaded("flux"))
    assert (shape, packed) == ((1, 16, 128, 128), True)


def test_height_width_ignored_for_4d() -> None:
    shape, packed = L.image_latent_shape((1, 16, 8, 8), {"height": 999, "width": 3}, FakeLoaded("flux"))
    assert (shape, packed) == ((1, 16, 8, 8), False)


def test_packed_size_not_multiple_of_16_floors() -> None:
    # 72 // 16 = 4 -> 8 latent rows; 40 // 16 = 2 -> 4 latent columns
    shape, _ = L.image_latent_shape((1, 8, 64), {"height": 72, "width": 40}, FakeLoaded("flux"))
    assert shape == (1, 16, 8, 4)


@pytest.mark.parametrize(
    ("family", "shape", "params", "needle"),
    [
        ("sd-v1", (1, 16, 8, 8), {}, "expected [B, 4, h, w]"),
        ("sd-v1", (1, 4, 2, 8, 8), {}, "5-D video latent"),
        ("sd-v1", (1, 16, 64), {"height": 64, "width": 64}, "got a 3-D tensor"),
        ("flux", (8, 8), {}, "got a 2-D tensor"),
        ("flux", (1, 16, 64), {}, "need the height and width"),
        ("flux", (1, 15, 64), {"height": 64, "width": 64}, "needs [1, 16, 64]"),
        ("flux", (1, 16, 16), {"height": 64, "width": 64}, "64 values per token"),
        ("flux", (1, 16, 64), {"height": 64, "width": -1}, "positive integer"),
    ],
)
def test_shape_errors_name_the_expected_shape(family: str, shape: tuple[int, ...], params: dict, needle: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        L.image_latent_shape(shape, params, FakeLoaded(family))
    assert needle in info.value.message
    assert info.value.status_code == 400


def test_pixel_limit_message() -> None:
    L.check_pixels(1, 4096, 4096, DEFAULT_MAX_PIXELS)
    with pytest.raises(InvalidRequest, match=r"4104x4096 pixels is over this endpoint's limit of 4096x4096"):
        L.check_pixels(1, 4096, 4104, DEFAULT_MAX_PIXELS)


def test_max_pixels_env_forms() -> None:
    assert parse_max_pixels(None) == 4096 * 4096
    assert parse_max_pixels("64x32") == 2048
    assert parse_max_pixels("1000") == 1000
    with pytest.raises(ValueError):
        parse_max_pixels("big")


# --------------------------------------------------------------------------- rounding


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_uint8_equals_vae_image_processor(dtype: torch.dtype) -> None:
    gen = torch.Generator().manual_seed(0)
    x = (torch.rand(2, 3, 16, 16, generator=gen) * 2.4 - 1.2).to(dtype)
    # values that land exactly on .5 after * 255 exercise the round-half-to-even rule
    x[0, 0, 0, :4] = torch.tensor([-1.0, 1.0, 2 * (0.5 / 255) - 1, 2 * (254.5 / 255) - 1]).to(dtype)
    expected = (VaeImageProcessor().postprocess(x, output_type="np") * 255).round().astype("uint8")
    assert np.array_equal(to_uint8(x).numpy(), expected)
    pil = VaeImageProcessor().postprocess(x, output_type="pil")
    assert np.array_equal(np.asarray(pil[1]), to_uint8(x)[1].numpy())


def test_unit_keeps_dtype_and_range() -> None:
    x = torch.tensor([[-3.0, -1.0, 0.0, 1.0, 3.0]], dtype=torch.bfloat16).view(1, 1, 1, 5)
    out = to_unit(x)
    assert out.dtype == torch.bfloat16
    assert out.flatten().tolist() == [0.0, 0.0, 0.5, 1.0, 1.0]


# --------------------------------------------------------------------------- memory (docs/reference-figures.md)


@pytest.mark.parametrize(
    ("batch", "side", "itemsize", "gib"),
    [
        (1, 512, 2, 0.60),
        (1, 1024, 2, 2.38),
        (1, 1024, 4, 4.78),
        (1, 2048, 2, 9.53),
        (4, 1024, 2, 9.53),
        (8, 512, 2, 4.76),
    ],
)
def test_memory_estimate_matches_anchors(batch: int, side: int, itemsize: int, gib: float) -> None:
    assert math.isclose(estimate_decode_bytes(batch, side, side, itemsize) / GiB, gib, rel_tol=0.02)


def test_tiled_estimate_matches_anchor() -> None:
    assert math.isclose(estimate_tiled_decode_bytes(1, 2048, 2048, 2, tile=1024) / GiB, 2.42, rel_tol=0.03)
    # a tile never exceeds the image
    assert estimate_tiled_decode_bytes(1, 256, 256, 2, tile=1024) < estimate_decode_bytes(1, 512, 512, 2)


# --------------------------------------------------------------------------- media


def test_png_is_lossless_and_jpeg_quality_matters() -> None:
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (32, 48, 3), dtype=np.uint8))
    assert np.array_equal(np.asarray(Image.open(__import__("io").BytesIO(media.encode_png(img)))), np.asarray(img))
    assert len(media.encode_jpeg(img, quality=95)) > len(media.encode_jpeg(img, quality=20))
    with pytest.raises(ValueError):
        media.encode_jpeg(img, quality=0)


def test_fast_png_keeps_smooth_images_small() -> None:
    # A flat-ish image must still compress like PNG should (the Huffman-only strategy made it 10x larger).
    y, x = np.mgrid[0:256, 0:256]
    gradient = Image.fromarray(np.stack([x % 256, y % 256, (x + y) // 2 % 256], -1).astype(np.uint8))
    raw_bytes = 256 * 256 * 3
    assert len(media.encode_png(gradient)) < raw_bytes / 20


# --------------------------------------------------------------------------- loading and init-repo


def test_handler_names_map_to_families() -> None:
    assert family_for_handler("sd-v1-decode").name == "sd-v1"
    assert family_for_handler("wan-decode").name == "wan"
    with pytest.raises(ValueError, match="<family>-decode"):
        family_for_handler("sd-v1")


def test_init_repo_writes_handler_and_weights(model_repo: Any) -> None:
    repo: Path = model_repo("sd-v1-decode")
    names = {p.name for p in repo.iterdir()}
    assert {"handler.py", "requirements.txt", "README.md", "config.json"} <= names
    assert "diffusion_pytorch_model.safetensors" in names


def test_init_repo_from_a_directory_with_vae_subfolder(model_repo: Any, tmp_path: Path) -> None:
    pipeline = tmp_path / "pipeline"
    (pipeline / "vae").mkdir(parents=True)
    source = model_repo("flux-decode")
    for name in ("config.json", "diffusion_pytorch_model.safetensors"):
        (pipeline / "vae" / name).write_bytes((source / name).read_bytes())
    assert find_weights_dir(pipeline) == pipeline / "vae"
    out = init_repo("flux-encode", tmp_path / "out", weights=str(pipeline))
    assert (out / "handler.py").is_file() and find_weights_dir(out) == out


def test_init_repo_needs_exactly_one_source(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="exactly one"):
        init_repo("sd-v1-decode", tmp_path)


def test_loading_config_overrides_family_and_env_overrides_dtype(model_repo: Any, tmp_path: Path) -> None:
    source = model_repo("sd-v1-decode")
    (tmp_path / "vae").mkdir()
    config = json.loads((source / "config.json").read_text())
    config["scaling_factor"] = 0.25
    (tmp_path / "vae" / "config.json").write_text(json.dumps(config))
    (tmp_path / "vae" / "diffusion_pytorch_model.safetensors").write_bytes(
        (source / "diffusion_pytorch_model.safetensors").read_bytes()
    )
    loaded = load_vae(tmp_path, "sd-v1", device="cpu", dtype="bfloat16")
    assert loaded.scaling_factor == 0.25
    assert loaded.dtype == torch.bfloat16 == next(loaded.vae.parameters()).dtype
    assert load_vae(source, "sd-v1", device="cpu").dtype == torch.float32


def test_dtype_defaults() -> None:
    assert resolve_dtype(get_family("flux"), torch.device("cuda")) == torch.bfloat16
    assert resolve_dtype(get_family("sdxl"), torch.device("cuda")) == torch.float16
    assert resolve_dtype(get_family("sdxl"), torch.device("cpu")) == torch.float32
    assert resolve_dtype(get_family("sdxl"), torch.device("cpu"), "bfloat16") == torch.bfloat16
    with pytest.raises(ValueError, match="VAE_DTYPE"):
        resolve_dtype(get_family("sdxl"), torch.device("cpu"), "uint8")


def test_handler_knobs_are_parsed_once_and_typed() -> None:
    config = VaeConfig.from_env(
        {"VAE_DTYPE": "BFloat16", "MAX_PIXELS": "64x32", "MAX_FRAMES": "33", "GPU_MEMORY_BUDGET_GB": "0.5"}
    )
    assert config == VaeConfig(dtype="bfloat16", max_pixels=2048, max_frames=33, memory_budget_bytes=2**29)
    assert VaeConfig.from_env({}) == VaeConfig()
    for bad in ({"VAE_DTYPE": "uint8"}, {"MAX_FRAMES": "0"}, {"MAX_FRAMES": "x"}, {"GPU_MEMORY_BUDGET_GB": "lots"}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            VaeConfig.from_env(bad)


def test_missing_weights_say_how_to_make_a_repo(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="init-repo"):
        find_weights_dir(tmp_path)


@pytest.mark.parametrize("name", ["hunyuanvideo-decode", "wan-decode"])
def test_init_repo_for_video_handlers(name: str, tmp_path: Path) -> None:
    out = init_repo(name, tmp_path / name, random_weights="tiny")
    assert (out / "handler.py").is_file() and find_weights_dir(out) == out
    config = json.loads((out / "config.json").read_text())
    assert config["_class_name"] == get_family(name.rsplit("-", 1)[0]).class_name


def test_cli_init_repo(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from hf_remote_vae_toolkit.cli import main

    assert main(["init-repo", "sdxl-encode", "--out", str(tmp_path / "r"), "--random-weights", "tiny"]) == 0
    assert "HF_MODEL_DIR=" in capsys.readouterr().out
    assert main(["init-repo", "nope-decode", "--out", str(tmp_path / "x"), "--random-weights", "tiny"]) == 2
    assert "unknown VAE family 'nope'" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # argparse: exactly one weights source
        main(["init-repo", "sdxl-encode", "--out", str(tmp_path / "y")])
    capsys.readouterr()
    assert main(["init-repo", "sdxl-decode", "--out", str(tmp_path / "z"), "--random-weights", "tiny",
                 "--handlers-dir", str(tmp_path / "missing")]) == 2  # fmt: skip
    assert "--handlers-dir" in capsys.readouterr().err


def test_a_16_bit_grayscale_image_keeps_its_levels_for_encode() -> None:
    import io

    from hf_remote_vae_toolkit.vae.encode import image_to_tensor

    levels = (np.arange(64 * 64, dtype=np.uint32).reshape(64, 64) * 16).astype(np.uint16)
    buffer = io.BytesIO()
    Image.fromarray(levels).save(buffer, format="PNG")
    image = Image.open(buffer)
    assert image.mode in ("I;16", "I")
    x = image_to_tensor(image)
    expected = torch.from_numpy(levels.astype(np.float32) / 65535.0 * 2 - 1)
    assert torch.allclose(x[0, 0], expected, atol=1e-6) and torch.equal(x[0, 0], x[0, 2])
    assert float((x > 0.99).float().mean()) < 0.01  # Pillow's convert("RGB") made 99.6 % of it white


def test_images_that_need_an_external_program_are_never_opened() -> None:
    # EPS goes to Ghostscript when it is installed: untrusted PostScript must never run here
    formats = media._safe_formats()
    assert "EPS" not in formats and {"PNG", "JPEG", "WEBP", "TIFF", "BMP", "GIF"} <= set(formats)
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\nshowpage\n"
    with pytest.raises(InvalidRequest, match="cannot identify"):  # refused unread, not "Ghostscript missing"
        media.open_image(eps)
