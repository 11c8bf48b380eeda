"""``hf-remote-vae decode`` / ``encode`` write correct files (real handlers on loopback, via the real parser)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from hf_remote_vae_toolkit.cli import main
from hf_remote_vae_toolkit.client import remote_decode, remote_encode
from hf_remote_vae_toolkit.testing import running_server
from hf_remote_vae_toolkit.vae.repo import init_repo

RAW = {"output_type": "pt", "return_type": "pt"}
UINT8 = {**RAW, "partial_postprocess": True}


@pytest.fixture(scope="module")
def sd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(decode URL, encode URL) of the real sd-v1 handlers with tiny random weights."""
    root = tmp_path_factory.mktemp("sd")
    dec = init_repo("sd-v1-decode", root / "dec", random_weights="tiny")
    enc = init_repo("sd-v1-encode", root / "enc", random_weights="tiny")
    with running_server(dec) as dec_url, running_server(enc) as enc_url:
        yield dec_url, enc_url


def latents_file(path: Path, **tensors: torch.Tensor) -> Path:
    save_file({k: v.contiguous() for k, v in tensors.items()}, path)
    return path


def test_decode_png_jpeg_and_safetensors(sd, tmp_path: Path, capsys) -> None:
    url = sd[0]
    z = torch.randn(1, 4, 8, 8)
    src = latents_file(tmp_path / "z.safetensors", latents=z)
    for name in ("out.png", "out.jpg", "out.safetensors"):
        assert main(["decode", str(src), "--endpoint", url, "-o", str(tmp_path / name), "--no-progress"]) == 0
    expected = remote_decode(url, z, **UINT8)[0].numpy()  # default scaling: the model's own
    with Image.open(tmp_path / "out.png") as png:
        assert png.format == "PNG" and np.array_equal(np.asarray(png), expected)
    with Image.open(tmp_path / "out.jpg") as jpg:
        assert jpg.format == "JPEG" and jpg.size == (64, 64)
        reference = io.BytesIO()
        Image.fromarray(expected).save(reference, format="JPEG", quality=95)  # the CLI's default quality
        assert np.array_equal(np.asarray(jpg), np.asarray(Image.open(reference)))
    raw = load_file(tmp_path / "out.safetensors")["images"]
    assert torch.equal(raw, remote_decode(url, z, **RAW))
    assert str(tmp_path / "out.png") in capsys.readouterr().out


def test_decode_many_files_keys_and_batches_into_a_directory(sd, tmp_path: Path) -> None:
    url = sd[0]
    a = latents_file(tmp_path / "a.safetensors", latents=torch.randn(1, 4, 8, 8))
    b = latents_file(tmp_path / "b.safetensors", first=torch.randn(1, 4, 8, 8), second=torch.randn(2, 4, 8, 8))
    out = tmp_path / "out"
    args = ["decode", str(a), str(b), "--endpoint", url, "-o", str(out), "--format", "png", "--no-scaling"]
    assert main(args) == 0
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "b_first.png", "b_second_0.png", "b_second_1.png"]
    second = load_file(b)["second"]
    expected = remote_decode(url, second, do_scaling=False, **UINT8)
    with Image.open(out / "b_second_1.png") as image:
        assert np.array_equal(np.asarray(image), expected[1].numpy())


def test_decode_reports_a_failed_file_and_writes_the_others(sd, tmp_path: Path, capsys) -> None:
    good = latents_file(tmp_path / "good.safetensors", latents=torch.randn(1, 4, 8, 8))
    bad = latents_file(tmp_path / "bad.safetensors", latents=torch.randn(1, 7, 8, 8))  # wrong channel count
    out = tmp_path / "out"
    assert main(["decode", str(good), str(bad), "--endpoint", sd[0], "-o", str(out), "--retries", "0"]) == 1
    assert [p.name for p in out.iterdir()] == ["good.png"]
    assert "bad.safetensors" in capsys.readouterr().err


def test_decode_mp4_writes_the_server_bytes(toy_decoder_url: str, tmp_path: Path) -> None:
    src = latents_file(tmp_path / "v.safetensors", latents=torch.randn(1, 4, 2, 2, 2))
    assert main(["decode", str(src), "--endpoint", toy_decoder_url, "-o", str(tmp_path / "v.mp4")]) == 0
    assert (tmp_path / "v.mp4").read_bytes() == remote_decode(toy_decoder_url, load_file(src)["latents"], **{
        "output_type": "mp4", "return_type": "mp4"})  # fmt: skip


def test_decode_refuses_an_unknown_extension(tmp_path: Path, capsys) -> None:
    src = latents_file(tmp_path / "z.safetensors", latents=torch.randn(1, 4, 8, 8))
    assert main(["decode", str(src), "--endpoint", "http://127.0.0.1:9", "-o", str(tmp_path / "x.gif")]) == 2
    assert "output format" in capsys.readouterr().err


def test_encode_writes_latents(sd, tmp_path: Path) -> None:
    url = sd[1]
    pixels = (torch.rand(64, 48, 3, generator=torch.Generator().manual_seed(0)) * 255).to(torch.uint8).numpy()
    Image.fromarray(pixels).save(tmp_path / "in.png")
    out = tmp_path / "latents.safetensors"
    assert (
        main(["encode", str(tmp_path / "in.png"), "--endpoint", url, "-o", str(out), "--scaling-factor", "0.18215"])
        == 0
    )
    latents = load_file(out)["latents"]
    with Image.open(tmp_path / "in.png") as image:
        assert torch.equal(latents, remote_encode(url, image, 0.18215))
    assert latents.shape == (1, 4, 8, 6)


def test_one_file_into_a_directory_follows_format(sd, tmp_path: Path, capsys) -> None:
    url = sd[0]
    src = latents_file(tmp_path / "z.safetensors", latents=torch.randn(1, 4, 8, 8))
    out = tmp_path / "new-dir"
    assert main(["decode", str(src), "--endpoint", url, "-o", f"{out}/", "--format", "jpg", "--no-progress"]) == 0
    with Image.open(out / "z.jpg") as jpg:
        assert jpg.format == "JPEG"
    assert capsys.readouterr().out.strip() == str(out / "z.jpg")


@pytest.mark.parametrize(
    ("output", "extra", "needle"),
    [
        ("out.png", ["--format", "jpg"], "is a .png file but --format is jpg"),
        ("out", [], "give a file name ending in one of"),
    ],
)
def test_output_and_format_that_disagree_are_one_clear_line(tmp_path: Path, capsys, output, extra, needle) -> None:
    src = latents_file(tmp_path / "z.safetensors", latents=torch.randn(1, 4, 8, 8))
    args = ["decode", str(src), "--endpoint", "http://127.0.0.1:9", "-o", str(tmp_path / output), *extra]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / output).exists()


def test_corrupt_latents_file_is_one_line(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 7 + b"not safetensors at all")
    assert main(["decode", str(bad), "--endpoint", "http://127.0.0.1:9", "-o", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "bad.safetensors" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_encode_sample_and_seed(sd, tmp_path: Path, capsys) -> None:
    url = sd[1]
    image = tmp_path / "in.png"
    Image.fromarray((np.random.default_rng(0).random((32, 40, 3)) * 255).astype(np.uint8)).save(image)
    outs = []
    for name, extra in (("a", ["--sample", "--seed", "3"]), ("b", ["--sample", "--seed", "3"]), ("m", [])):
        out = tmp_path / f"{name}.safetensors"
        assert main(["encode", str(image), "--endpoint", url, "-o", str(out), *extra]) == 0
        outs.append(load_file(out)["latents"])
    assert torch.equal(outs[0], outs[1])  # same seed, same draw
    assert not torch.equal(outs[0], outs[2])  # a draw is not the mode
    with Image.open(image) as pil:
        assert torch.equal(outs[2], remote_encode(url, pil))
    capsys.readouterr()
    assert main(["encode", str(image), "--endpoint", url, "-o", str(tmp_path / "c.safetensors"), "--seed", "1"]) == 2
    assert "--sample" in capsys.readouterr().err


def test_encode_help_describes_the_command(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["encode", "--help"])
    out = capsys.readouterr().out
    assert "latent distribution" in out and "--sample" in out and "--seed" in out
