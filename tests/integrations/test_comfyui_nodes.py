"""The ComfyUI node pack (integrations/comfyui), called as ComfyUI calls nodes, without ComfyUI.

The pack is imported the way ComfyUI imports a custom node folder (``spec_from_file_location`` of its
``__init__.py`` under the folder's name), each node is built from ``NODE_CLASS_MAPPINGS``, its inputs
checked against ``INPUT_TYPES`` and called through ``FUNCTION``; outputs must match ``RETURN_TYPES``.
The endpoints are the real server over tiny real diffusers VAEs, and every result is compared with a
local decode/encode of the same weights, in ComfyUI's conventions: a LATENT's ``samples`` are in the
VAE's own space (decoded with no scaling) and an IMAGE is float32 ``[B, H, W, 3]`` in [0, 1] on the CPU.

ComfyUI itself is not installed here (it is not a pip package); what needs it (``comfy.utils``'s
progress bar, ``folder_paths``' output directory) is exercised through modules of the same names
that record what the nodes call.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from diffusers import AutoencoderKL, AutoencoderKLHunyuanVideo, AutoencoderTiny

from hf_remote_vae_toolkit.errors import Overloaded
from hf_remote_vae_toolkit.testing import running_server
from hf_remote_vae_toolkit.vae.repo import init_repo

PACK = Path(__file__).resolve().parents[2] / "integrations" / "comfyui"
NODES = ("RemoteVAELoader", "RemoteVAEDecode", "RemoteVAEEncode", "RemoteVAEDecodeVideo")


def _load_pack(name: str = "comfyui_remote_vae") -> Any:
    """As ComfyUI's load_custom_node does: the folder's __init__.py, as a package, under its name."""
    spec = importlib.util.spec_from_file_location(name, PACK / "__init__.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


PACK_MODULE = _load_pack()
nodes = sys.modules["comfyui_remote_vae.nodes"]


def run_node(name: str, **inputs: Any) -> tuple[Any, ...]:
    """Build and call a node as ComfyUI's executor does, checking the inputs against INPUT_TYPES."""
    cls = PACK_MODULE.NODE_CLASS_MAPPINGS[name]
    spec = cls.INPUT_TYPES()
    declared = {**spec.get("required", {}), **spec.get("optional", {})}
    missing = set(spec.get("required", {})) - set(inputs)
    assert not missing, f"{name}: required inputs {missing} not given"
    assert set(inputs) <= set(declared), f"{name}: undeclared inputs {set(inputs) - set(declared)}"
    out = getattr(cls(), cls.FUNCTION)(**inputs)
    assert isinstance(out, tuple) and len(out) == len(cls.RETURN_TYPES)
    return out


def _image_ok(image: torch.Tensor) -> None:
    assert image.dtype == torch.float32 and image.device.type == "cpu" and image.ndim == 4 and image.shape[-1] == 3
    assert float(image.min()) >= 0.0 and float(image.max()) <= 1.0


def _comfy_image(raw: torch.Tensor) -> torch.Tensor:
    """ComfyUI's VAE output convention from a raw decoder output [B, 3, H, W] in [-1, 1]."""
    return ((raw.float() + 1.0) / 2.0).clamp(0.0, 1.0).permute(0, 2, 3, 1)


def _latent(shape: tuple[int, ...], seed: int = 0) -> dict[str, torch.Tensor]:
    return {"samples": torch.randn(*shape, generator=torch.Generator().manual_seed(seed))}


class Recorder:
    """Stands in for comfy.utils.ProgressBar (ComfyUI is not installed): records its updates."""

    bars: list[Recorder] = []  # noqa: RUF012

    def __init__(self, total: int) -> None:
        self.total, self.done = total, 0
        Recorder.bars.append(self)

    def update(self, value: int) -> None:
        self.done += value


@pytest.fixture
def comfy_progress(monkeypatch: pytest.MonkeyPatch) -> type[Recorder]:
    comfy = types.ModuleType("comfy")
    utils = types.ModuleType("comfy.utils")
    utils.ProgressBar = Recorder  # type: ignore[attr-defined]
    comfy.utils = utils  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "comfy", comfy)
    monkeypatch.setitem(sys.modules, "comfy.utils", utils)
    Recorder.bars = []
    return Recorder


# --------------------------------------------------------------------------- servers


@pytest.fixture(scope="module")
def sd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """sd-v1 decode + encode, and the taesd preview, each on its own server; local copies of the weights."""
    root = tmp_path_factory.mktemp("comfy-sd")
    dec = init_repo("sd-v1-decode", root / "dec", random_weights="tiny")
    enc = init_repo("sd-v1-encode", root / "enc", random_weights="tiny")
    tae = init_repo("taesd-decode", root / "tae", random_weights="tiny")
    with running_server(dec) as d, running_server(enc) as e, running_server(tae) as t:
        yield {
            "decode": d,
            "encode": e,
            "preview": t,
            "vae": AutoencoderKL.from_pretrained(str(dec)).eval(),
            "tae": AutoencoderTiny.from_pretrained(str(tae)).eval(),
        }


def _loader(url: str, family: str = "sd-v1", **extra: Any) -> Any:
    return run_node("RemoteVAELoader", endpoint=url, family=family, timeout=60.0, retries=0, **extra)[0]


# --------------------------------------------------------------------------- the pack's surface


def test_the_mappings_declare_every_node_as_comfyui_reads_them() -> None:
    assert set(PACK_MODULE.NODE_CLASS_MAPPINGS) == set(NODES)
    assert set(PACK_MODULE.NODE_DISPLAY_NAME_MAPPINGS) == set(NODES)
    for cls in PACK_MODULE.NODE_CLASS_MAPPINGS.values():
        spec = cls.INPUT_TYPES()
        assert set(spec) <= {"required", "optional", "hidden"}
        for entry in [*spec["required"].values(), *spec.get("optional", {}).values()]:
            kind = entry[0]
            assert isinstance(kind, (str, list)), entry
            options = entry[1] if len(entry) > 1 else {}
            if isinstance(kind, list):  # a combo: its default is one of its values
                assert options.get("default", kind[0]) in kind
            if "min" in options:
                assert options["min"] <= options["default"] <= options["max"]
        assert isinstance(cls.RETURN_TYPES, tuple) and callable(getattr(cls, cls.FUNCTION))
        assert cls.CATEGORY.startswith("latent")
    assert PACK_MODULE.NODE_CLASS_MAPPINGS["RemoteVAEDecode"].RETURN_TYPES == ("IMAGE",)
    assert PACK_MODULE.NODE_CLASS_MAPPINGS["RemoteVAEEncode"].RETURN_TYPES == ("LATENT",)


def test_the_pack_imports_without_diffusers() -> None:
    """ComfyUI's Python has torch but not diffusers: the pack must load there."""
    code = (
        "import sys, importlib.util\n"
        "sys.modules['diffusers'] = None\n"
        f"spec = importlib.util.spec_from_file_location('pack', {str(PACK / '__init__.py')!r})\n"
        "m = importlib.util.module_from_spec(spec); sys.modules['pack'] = m; spec.loader.exec_module(m)\n"
        "print(sorted(m.NODE_CLASS_MAPPINGS))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "RemoteVAEDecode" in result.stdout


def test_the_loader_reads_the_token_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(nodes.TOKEN_ENV, "from-env")
    config = _loader("http://127.0.0.1:9")
    assert config.token == "from-env"
    assert "from-env" not in repr(config)
    assert _loader("http://127.0.0.1:9", token="typed").token == "typed"
    monkeypatch.delenv(nodes.TOKEN_ENV)
    assert _loader("http://127.0.0.1:9").token is None  # the client's default: HF token for HF hosts only


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ({"endpoint": "127.0.0.1:5000"}, "http:// or https://"),
        ({"endpoint": "http://x", "preview_endpoint": "ftp://y"}, "preview_endpoint must be"),
        ({"endpoint": "http://x", "family": "taesd"}, "preview_endpoint of a sd-v1 loader"),
        ({"endpoint": "http://x", "family": "sd3"}, "unknown VAE family"),
    ],
)
def test_the_loader_refuses_bad_inputs(inputs: dict[str, Any], message: str) -> None:
    with pytest.raises(nodes.RemoteVAEError, match=message):
        run_node("RemoteVAELoader", **{"family": "sd-v1", "timeout": 5.0, "retries": 0, **inputs})


# --------------------------------------------------------------------------- decode / encode vs local


def test_decode_equals_a_local_vae_decode_of_the_samples(sd: dict[str, Any], comfy_progress: type[Recorder]) -> None:
    latent = _latent((3, 4, 8, 8))  # a LATENT: the VAE's own space, no scaling anywhere
    config = _loader(sd["decode"], concurrency=2)  # two requests in flight, then the third
    (image,) = run_node("RemoteVAEDecode", samples=latent, remote_vae=config)
    _image_ok(image)
    assert image.shape == (3, 64, 64, 3)
    with torch.no_grad():
        expected = torch.cat([_comfy_image(sd["vae"].decode(x).sample) for x in latent["samples"].split(1)])
    torch.testing.assert_close(image, expected, rtol=0, atol=1e-6)
    # one progress bar over the batch, run to the end
    assert [(b.total, b.done) for b in comfy_progress.bars] == [(3, 3)]


def test_decode_with_uint8_transfer_is_the_8_bit_image(sd: dict[str, Any]) -> None:
    latent = _latent((1, 4, 8, 8), seed=1)
    (image,) = run_node("RemoteVAEDecode", samples=latent, remote_vae=_loader(sd["decode"]), transfer="uint8")
    _image_ok(image)
    with torch.no_grad():
        expected = _comfy_image(sd["vae"].decode(latent["samples"]).sample)
    assert float((image - expected).abs().max()) <= 0.5 / 255 + 1e-6  # rounded to 8 bits, no more


def test_preview_quality_asks_the_preview_endpoint(sd: dict[str, Any]) -> None:
    """The preview endpoint maps a LATENT (VAE space) to TAESD's space: (x - 0) * 0.18215."""
    latent = _latent((2, 4, 8, 8), seed=2)
    config = _loader(sd["decode"], preview_endpoint=sd["preview"])
    (image,) = run_node("RemoteVAEDecode", samples=latent, remote_vae=config, quality="preview")
    _image_ok(image)
    with torch.no_grad():
        expected = torch.cat([_comfy_image(sd["tae"].decode(x * 0.18215).sample) for x in latent["samples"].split(1)])
    torch.testing.assert_close(image, expected, rtol=0, atol=1e-6)
    with pytest.raises(nodes.RemoteVAEError, match="needs a preview_endpoint"):
        run_node("RemoteVAEDecode", samples=latent, remote_vae=_loader(sd["decode"]), quality="preview")


def test_encode_equals_a_local_encode_and_round_trips(sd: dict[str, Any], comfy_progress: type[Recorder]) -> None:
    pixels = torch.rand(2, 70, 67, 4, generator=torch.Generator().manual_seed(3))  # RGBA, not a multiple of 8
    config = _loader(sd["decode"], encode_endpoint=sd["encode"])
    (latent,) = run_node("RemoteVAEEncode", pixels=pixels, remote_vae=config)
    z = latent["samples"]
    assert z.shape == (2, 4, 8, 8) and z.dtype == torch.float32
    # ComfyUI's crop: centred, to multiples of 8 (70 -> 64 from row 3; 67 -> 64 from column 1)
    cropped = pixels[:, 3:67, 1:65, :3].permute(0, 3, 1, 2)
    with torch.no_grad():
        expected = sd["vae"].encode(cropped * 2 - 1).latent_dist.mode()  # raw VAE latents: no scaling
    torch.testing.assert_close(z, expected, rtol=1e-5, atol=1e-5)
    assert [(b.total, b.done) for b in comfy_progress.bars] == [(2, 2)]
    (image,) = run_node("RemoteVAEDecode", samples=latent, remote_vae=config)
    assert image.shape == (2, 64, 64, 3)
    sampled = run_node("RemoteVAEEncode", pixels=pixels, remote_vae=config, latent="sample", seed=7)[0]["samples"]
    again = run_node("RemoteVAEEncode", pixels=pixels, remote_vae=config, latent="sample", seed=7)[0]["samples"]
    torch.testing.assert_close(sampled, again, rtol=0, atol=0)  # a seeded draw
    assert not torch.equal(sampled, z)


def test_flux_latents_packed_and_unpacked(tmp_path_factory: pytest.TempPathFactory) -> None:
    from diffusers import FluxPipeline

    repo = init_repo("flux-decode", tmp_path_factory.mktemp("flux"), random_weights="tiny")
    vae = AutoencoderKL.from_pretrained(str(repo)).eval()
    x = _latent((1, 16, 8, 8), seed=4)["samples"]  # ComfyUI's Flux LATENT: unpacked, VAE space
    with running_server(repo) as url:
        config = _loader(url, family="flux")
        (image,) = run_node("RemoteVAEDecode", samples={"samples": x}, remote_vae=config)
        packed = FluxPipeline._pack_latents(x, 1, 16, 8, 8)
        (from_packed,) = run_node(
            "RemoteVAEDecode", samples={"samples": packed}, remote_vae=config, width=64, height=64
        )
        with pytest.raises(nodes.RemoteVAEError, match="need the width and height"):
            run_node("RemoteVAEDecode", samples={"samples": packed}, remote_vae=config)
    with torch.no_grad():
        expected = _comfy_image(vae.decode(x).sample)
    torch.testing.assert_close(image, expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(from_packed, expected, rtol=0, atol=1e-6)


# --------------------------------------------------------------------------- video


def test_video_frames_have_the_right_count_layout_and_values(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    import av

    repo = init_repo("hunyuanvideo-decode", tmp_path_factory.mktemp("hv"), random_weights="tiny")
    vae = AutoencoderKLHunyuanVideo.from_pretrained(str(repo)).eval()
    latent = _latent((2, 16, 2, 4, 4), seed=5)  # 2 videos, 2 latent frames -> 1 + (2 - 1) * 4 = 5 frames each
    folder_paths = types.ModuleType("folder_paths")
    folder_paths.get_output_directory = lambda: str(tmp_path)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "folder_paths", folder_paths)
    with running_server(repo) as url:
        config = _loader(url, family="hunyuanvideo")
        frames, paths = run_node(
            "RemoteVAEDecodeVideo", samples=latent, remote_vae=config, save_mp4=True, fps=8.0, filename_prefix="hv/clip"
        )
        with pytest.raises(nodes.RemoteVAEError, match="Remote VAE Decode Video"):
            run_node("RemoteVAEDecode", samples=latent, remote_vae=config)
    _image_ok(frames)
    assert frames.shape == (10, 32, 32, 3)  # [B * F, H, W, 3], video after video
    with torch.no_grad():
        raw = vae.decode(latent["samples"][1:]).sample  # [1, 3, F, H, W]
    expected = ((raw[0].permute(1, 2, 3, 0) + 1.0) / 2.0).clamp(0.0, 1.0)
    torch.testing.assert_close(frames[5:], expected, rtol=0, atol=1e-5)
    files = paths.splitlines()
    assert [Path(p).name for p in files] == ["clip_00001_.mp4", "clip_00002_.mp4"]
    for path in files:
        assert Path(path).parent == tmp_path / "hv"
        with av.open(path) as container:
            assert sum(1 for _ in container.decode(video=0)) == 5


def test_the_video_node_refuses_image_latents(sd: dict[str, Any]) -> None:
    with pytest.raises(nodes.RemoteVAEError, match=r"5-D latent \[B, C, T, h, w\]"):
        run_node("RemoteVAEDecodeVideo", samples=_latent((1, 4, 8, 8)), remote_vae=_loader(sd["decode"]))


# --------------------------------------------------------------------------- errors in the UI


def test_a_wrong_family_is_refused_before_anything_is_sent() -> None:
    with pytest.raises(nodes.RemoteVAEError, match="does not fit the loader's family flux"):
        run_node("RemoteVAEDecode", samples=_latent((1, 4, 8, 8)), remote_vae=_loader("http://127.0.0.1:9", "flux"))


def test_an_unreachable_endpoint_says_so() -> None:
    with pytest.raises(nodes.RemoteVAEError, match="cannot reach the endpoint") as info:
        run_node("RemoteVAEDecode", samples=_latent((1, 4, 8, 8)), remote_vae=_loader("http://127.0.0.1:9"))
    assert "http://127.0.0.1:9" in str(info.value)


def test_a_401_names_the_token_variable(sd: dict[str, Any], tmp_path: Path) -> None:
    repo = init_repo("sd-v1-decode", tmp_path / "repo", random_weights="tiny")
    with running_server(repo, api_token="secret") as url:
        with pytest.raises(nodes.RemoteVAEError, match=nodes.TOKEN_ENV):
            run_node("RemoteVAEDecode", samples=_latent((1, 4, 8, 8)), remote_vae=_loader(url))
        (image,) = run_node("RemoteVAEDecode", samples=_latent((1, 4, 8, 8)), remote_vae=_loader(url, token="secret"))
    assert image.shape == (1, 64, 64, 3)


def test_a_413_says_what_to_change(tmp_path: Path) -> None:
    repo = init_repo("sd-v1-decode", tmp_path / "repo", random_weights="tiny")
    with running_server(repo, max_request_bytes=1024) as url:
        with pytest.raises(nodes.RemoteVAEError, match="413, too large"):
            run_node("RemoteVAEDecode", samples=_latent((1, 4, 16, 16)), remote_vae=_loader(url))


def test_a_429_after_the_retries_says_so() -> None:
    config = nodes.RemoteVAEConfig(endpoint="http://e", family="sd-v1", retries=3)
    error = nodes._explain(Overloaded("queue full (64 waiting)"), "http://e", "decode", config)
    assert "429" in str(error) and "after 3 retries" in str(error) and "queue full" in str(error)
    assert isinstance(error.__cause__, Overloaded)
