"""docs/endpoints.md: its curl and JavaScript decodes run as printed against a real server and give the
pixels our client gets; its table names real diffusers constants and init-repo commands that parse."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
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
DOC = (ROOT / "docs" / "endpoints.md").read_text()
PRINTED_URL = "http://127.0.0.1:5000/"


def doc_block(name: str) -> str:
    match = re.search(rf"<!-- tested: {re.escape(name)} .*?-->\s*\n```\w+\n(.*?)```", DOC, re.S)
    assert match, f"docs/endpoints.md has no block marked 'tested: {name}'"
    return match.group(1)


@pytest.fixture(scope="module")
def sd_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    repo = init_repo("sd-v1-decode", tmp_path_factory.mktemp("sd") / "repo", random_weights="tiny")
    with running_server(repo) as url:
        yield url


@pytest.fixture(scope="module")
def expected_png(sd_url: str) -> np.ndarray:
    """What our client gets for the documented request: zeros [1, 4, 64, 64], SD v1 scaling, PNG."""
    image = remote_decode(sd_url, torch.zeros(1, 4, 64, 64), scaling_factor=0.18215, image_format="png")
    return np.asarray(image)


def assert_decoded(path: Path, expected: np.ndarray) -> None:
    with Image.open(path) as png:
        assert png.format == "PNG" and png.size == (512, 512)
        assert np.array_equal(np.asarray(png.convert("RGB")), expected)


def test_curl_decode_runs_as_printed(sd_url: str, expected_png: np.ndarray, tmp_path: Path) -> None:
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed (apt-get install curl): the curl example is not run")
    code = doc_block("curl-decode")
    assert PRINTED_URL in code
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", code.replace(PRINTED_URL, f"{sd_url}/")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert_decoded(tmp_path / "decoded.png", expected_png)


def test_curl_shows_the_servers_error(sd_url: str, tmp_path: Path) -> None:
    """The doc says --fail-with-body keeps the JSON error: a wrong body length gives exit 22 and the message."""
    code = doc_block("curl-decode").replace(PRINTED_URL, f"{sd_url}/").replace("65536", "1000")
    result = subprocess.run(["bash", "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 22
    assert '"error"' in (tmp_path / "decoded.png").read_text() and "bytes" in (tmp_path / "decoded.png").read_text()


def test_javascript_fetch_decode_runs_as_printed(sd_url: str, expected_png: np.ndarray, tmp_path: Path) -> None:
    node = shutil.which("node") or shutil.which("nodejs")
    if node is None:
        pytest.skip(
            "node is not installed (apt-get install nodejs, or https://nodejs.org): the JavaScript example is not run"
        )
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=True).stdout.strip()
    if int(version.lstrip("v").split(".")[0]) < 18:
        pytest.skip(f"node {version} has no built-in fetch (the example needs Node 18+)")
    code = doc_block("js-decode")
    assert PRINTED_URL in code
    (tmp_path / "decode.mjs").write_text(code.replace(PRINTED_URL, f"{sd_url}/"))
    result = subprocess.run([node, "decode.mjs"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert_decoded(tmp_path / "decoded.png", expected_png)


def test_the_table_names_real_constants_and_commands_that_parse() -> None:
    from diffusers.utils import constants

    from hf_remote_vae_toolkit.cli import build_parser

    rows = re.findall(r"^\| (`\w+`|\(none: [^)]+\)) \| .*? \| `(hf-remote-vae init-repo [^`]+)` \|$", DOC, re.M)
    assert len(rows) == 8
    named = [name.strip("`") for name, _ in rows if name.startswith("`")]
    assert all(name.startswith(("DECODE_ENDPOINT_", "ENCODE_ENDPOINT_")) for name in named)
    assert all(hasattr(constants, name) for name in named), [n for n in named if not hasattr(constants, n)]
    parser = build_parser()
    for _, command in rows:
        args = parser.parse_args(shlex.split(command)[1:])
        assert (ROOT / "custom_handlers" / args.name / "handler.py").is_file(), args.name
        assert args.weights and args.out == f"./{args.name}"
    endpoint_constants = {n for n in dir(constants) if n.startswith(("DECODE_ENDPOINT_", "ENCODE_ENDPOINT_"))}
    assert endpoint_constants <= set(named), (
        f"diffusers has endpoints the table misses: {endpoint_constants - set(named)}"
    )


class WakingUp:
    """A handler that answers 503 (``NotReady``) for its first ``failures`` requests, as a waking endpoint does."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0

    def __call__(self, data: dict) -> Image.Image:
        from hf_remote_vae_toolkit.errors import NotReady

        self.calls += 1
        if self.calls <= self.failures:
            raise NotReady("starting")
        return Image.new("RGB", (64, 64), (10, 20, 30))


def test_cold_start_settings_ride_out_503s() -> None:
    code = doc_block("cold-start")
    handler = WakingUp(failures=3)
    with running_server(handler=handler) as url:
        scope: dict = {"endpoint": url, "latents": torch.zeros(1, 4, 8, 8)}
        exec(compile(code, "docs/endpoints.md", "exec"), scope)
    assert handler.calls == 4  # three 503s, retried, then the image
    assert scope["image"].size == (64, 64)
    assert np.abs(np.asarray(scope["image"], dtype=int) - (10, 20, 30)).max() <= 2  # a JPEG of the handler's image
    assert scope["session"].headers["X-Scale-Up-Timeout"] == "600"
