"""README.md's shell and Python blocks run as printed, in order, as one new user's terminal session.

The blocks become one bash script run in an empty directory whose ``.venv`` is this test's virtualenv
(what ``make`` created), with that venv's ``bin`` taken off ``PATH``: a README that forgot to say
``source .venv/bin/activate`` fails here with "hf-remote-vae: command not found". Three rewrites, each
standing for what a person does by hand:

- ``make ...`` lines are skipped: they set up ``.venv``, which this test runs in already;
- ``hf-remote-vae serve ...`` runs in the background ("leave it running") and the script waits for
  ``/health`` before the next line;
- port 5000 becomes a free port (CI runs tests in parallel; 5000 may be taken).

Python blocks run with the ``python`` on ``PATH`` at that point (the activated venv's). A block preceded
by ``<!-- not run by tests/firsthour: REASON -->`` is skipped, with its reason listed below.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from hf_remote_vae_toolkit.testing import free_port

ROOT = Path(__file__).resolve().parents[2]
SKIP_MARK = re.compile(r"<!-- not run by tests/firsthour: (?P<reason>[^>]+?) -->\s*\n")
BLOCK = re.compile(
    r"(?P<skip><!-- not run by tests/firsthour: [^>]+? -->\s*\n)?```(?P<lang>bash|python)\n(?P<code>.*?)```", re.S
)

#: The blocks the README may leave out of this test, and why (a new one must be added here on purpose).
ALLOWED_SKIPS = {
    "downloads from the Hugging Face Hub",
    "installs into the active environment; tests/firsthour/test_light_client.py runs it in a fresh venv",
}


def readme_blocks(text: str) -> list[tuple[str, str, str | None]]:
    """(language, code, skip reason or None) of every bash/python block, in order."""
    out = []
    for m in BLOCK.finditer(text):
        reason = SKIP_MARK.match(m["skip"])["reason"] if m["skip"] else None  # type: ignore[index]
        out.append((m["lang"], m["code"], reason))
    return out


def to_script(blocks: list[tuple[str, str, str | None]], port: int) -> str:
    lines = [
        "set -euo pipefail",
        "trap 'kill $(jobs -p) 2>/dev/null || true' EXIT",
    ]
    for lang, code, reason in blocks:
        if reason:
            continue
        code = re.sub(r"\b5000\b", str(port), code)
        if lang == "python":
            lines += ["python - <<'README_PY'", code.rstrip("\n"), "README_PY"]
            continue
        for line in code.splitlines():
            command = line.split(" #")[0].strip()
            if not command or command.startswith("make "):
                continue
            if command.startswith("hf-remote-vae serve"):
                lines += [
                    f"{command} > serve.log 2>&1 &",
                    f"for _ in $(seq 600); do curl -sf http://127.0.0.1:{port}/health > /dev/null && break; "
                    "kill -0 $! 2>/dev/null || { cat serve.log; exit 1; }; sleep 0.2; done",
                ]
            else:
                lines.append(command)
    return "\n".join(lines) + "\n"


def test_every_skipped_block_says_why() -> None:
    blocks = readme_blocks((ROOT / "README.md").read_text())
    reasons = {reason for _, _, reason in blocks if reason}
    assert reasons <= ALLOWED_SKIPS, f"new skipped README blocks: {reasons - ALLOWED_SKIPS}"
    assert sum(reason is None for _, _, reason in blocks) >= 4  # the runnable path stays runnable


def test_the_script_keeps_what_a_user_types() -> None:
    blocks = [("bash", "make demo  # x\nsource .venv/bin/activate\nhf-remote-vae serve --port 5000  # y\n", None)]
    script = to_script(blocks, 1234)
    assert "make demo" not in script and "source .venv/bin/activate" in script
    assert "hf-remote-vae serve --port 1234 > serve.log 2>&1 &" in script


@pytest.mark.slow
def test_readme_commands_run_as_printed(tmp_path: Path) -> None:
    activate = Path(sys.prefix) / "bin" / "activate"
    if sys.prefix == sys.base_prefix or not activate.is_file():
        pytest.skip("the tests are not running in a virtualenv (the README's `source .venv/bin/activate` needs one)")
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed (apt-get install curl): the README's shell block uses it")
    (tmp_path / ".venv").symlink_to(sys.prefix, target_is_directory=True)
    port = free_port()
    script = to_script(readme_blocks((ROOT / "README.md").read_text()), port)
    (tmp_path / "readme.sh").write_text(script)
    venv_bin = str(Path(sys.prefix) / "bin")
    path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep) if p and p != venv_bin)
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env.update(PATH=path, HF_HUB_OFFLINE="1")
    result = subprocess.run(
        ["bash", "readme.sh"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240, check=False
    )
    assert result.returncode == 0, (
        f"README script failed:\n{script}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
    )
    with Image.open(tmp_path / "decoded.jpg") as jpg:  # the Python block
        assert jpg.format == "JPEG" and jpg.size == (512, 512)
    with Image.open(tmp_path / "decoded.png") as png:  # hf-remote-vae decode
        assert png.format == "PNG" and png.size == (512, 512)
    assert (tmp_path / "sd-v1-tiny" / "handler.py").is_file()
    assert result.stdout.rstrip().endswith("Ok")  # curl /health, the last command
    assert shlex.quote(str(tmp_path)) not in script  # the script itself holds no test paths
