"""The client example in README.md and docs/client.md, and examples/pipeline_overlap.py runs, against a real local server."""

from __future__ import annotations

import re
import runpy
from pathlib import Path

import pytest
from PIL import Image

from hf_remote_vae_toolkit.testing import running_server
from hf_remote_vae_toolkit.vae.repo import init_repo

ROOT = Path(__file__).resolve().parents[2]
PLACEHOLDER = '"http://127.0.0.1:5000"'


def first_python_block(markdown: str) -> str:
    match = re.search(r"```python\n(.*?)```", markdown, re.S)
    assert match, "no python block"
    return match.group(1)


@pytest.mark.parametrize("doc", ["README.md", "docs/client.md"])
def test_the_five_line_client_example_runs(doc: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    code = first_python_block((ROOT / doc).read_text())
    assert len(code.strip().splitlines()) <= 6 and PLACEHOLDER in code
    model_dir = init_repo("sd-v1-decode", tmp_path / "repo", random_weights="tiny")
    monkeypatch.chdir(tmp_path)
    with running_server(model_dir) as url:
        exec(compile(code.replace(PLACEHOLDER, repr(url)), doc, "exec"), {})
    with Image.open(tmp_path / "decoded.jpg") as image:
        assert image.size == (512, 512) and image.format == "JPEG"


def test_the_overlap_example_writes_one_image_per_latent(tmp_path: Path) -> None:
    module = runpy.run_path(str(ROOT / "examples" / "pipeline_overlap.py"), run_name="example")
    paths = module["main"](["-n", "3", "--size", "32", "-o", str(tmp_path)])
    assert [p.name for p in paths] == ["0.jpg", "1.jpg", "2.jpg"]
    for path in paths:
        with Image.open(path) as image:
            assert image.size == (32, 32)
