"""The first commands a new user types: fast help, and one or two clear lines (no traceback) for the
mistakes of the first hour. Real subprocesses of the installed command."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hf_remote_vae_toolkit.testing import free_port

ROOT = Path(__file__).resolve().parents[2]


def hf_remote_vae(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "hf_remote_vae_toolkit", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
        cwd=cwd,
        check=False,
    )


def test_help_does_not_import_torch() -> None:
    code = "import sys; from hf_remote_vae_toolkit.cli import build_parser; build_parser(); print(sorted(sys.modules))"
    modules = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    for heavy in ("torch", "diffusers", "starlette", "uvicorn", "safetensors"):
        assert f"'{heavy}'" not in modules, f"hf-remote-vae --help imports {heavy}"
    t0 = time.perf_counter()
    assert hf_remote_vae("--help").returncode == 0
    assert time.perf_counter() - t0 < 5  # was 2 s with torch on a fast machine; ~0.3 s without


def test_serve_help_lists_the_environment() -> None:
    out = hf_remote_vae("serve", "--help").stdout
    for knob in ("HF_MODEL_DIR", "HF_MODEL_ID", "API_TOKEN", "CORS_ALLOW_ORIGINS", "MAX_QUEUE_SIZE", "LOG_LEVEL"):
        assert knob in out
    assert "--debug" in out


def test_init_repo_missing_local_dir_is_one_line(tmp_path: Path) -> None:
    result = hf_remote_vae("init-repo", "sd-v1-decode", "--out", "out", "--weights", "./missing-dir", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "init-repo: no directory ./missing-dir: --weights takes a local directory (config.json and the weights, "
        "or a vae/ folder) or a Hub repo id such as stabilityai/sd-vae-ft-mse"
    ]
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_init_repo_failed_download_leaves_nothing(tmp_path: Path) -> None:
    env = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf-home")}  # no network, an empty cache
    result = hf_remote_vae(
        "init-repo", "sd-v1-decode", "--out", "new", "--weights", "stabilityai/sd-vae-ft-mse", env=env, cwd=tmp_path
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2 and "Traceback" not in result.stderr
    assert lines[0].startswith(
        "init-repo: could not get the weights of 'stabilityai/sd-vae-ft-mse' from the Hugging Face Hub"
    )
    assert not (tmp_path / "new").exists()
    (tmp_path / "existing").mkdir()
    (tmp_path / "existing" / "mine.txt").write_text("keep")
    result = hf_remote_vae("init-repo", "sd-v1-decode", "--out", "existing", "--weights", "x/y", env=env, cwd=tmp_path)
    assert result.returncode == 2
    assert [p.name for p in (tmp_path / "existing").iterdir()] == ["mine.txt"]


@pytest.mark.slow
def test_serve_start_up_failure_is_short_unless_debug(tmp_path: Path) -> None:
    env = {"PORT": str(free_port()), "HOST": "127.0.0.1"}
    quiet = hf_remote_vae("serve", "--model-dir", str(tmp_path / "nope"), env=env)
    assert quiet.returncode != 0
    assert "To fix: set HF_MODEL_DIR" in quiet.stderr
    assert "Traceback" not in quiet.stderr and "--debug" in quiet.stderr
    assert len(quiet.stderr.strip().splitlines()) <= 6
    loud = hf_remote_vae("serve", "--model-dir", str(tmp_path / "nope"), "--debug", env=env)
    assert "Traceback (most recent call last):" in loud.stderr and "HandlerLoadError" in loud.stderr
    # a handler that raises in its own code: its frame, not the server's 25-60 lines
    broken = hf_remote_vae("serve", "--model-dir", str(ROOT / "tests/server/toy_handlers/broken"), env=env)
    assert 'broken/handler.py", line' in broken.stderr
    assert "FileNotFoundError: no diffusion_pytorch_model.safetensors" in broken.stderr
    assert "site-packages" not in broken.stderr and "server/app.py" not in broken.stderr


def test_bad_environment_is_one_line(tmp_path: Path) -> None:
    result = hf_remote_vae("serve", "--model-dir", str(tmp_path), env={"MAX_QUEUE_SIZE": "lots"})
    assert result.returncode == 2
    assert result.stderr.strip() == "serve: MAX_QUEUE_SIZE must be an integer, got 'lots'"


def test_demo_prints_commands_that_run(tmp_path: Path) -> None:
    import runpy

    demo = runpy.run_path(str(ROOT / "scripts" / "demo.py"), run_name="demo")
    lines = demo["next_steps"]()
    activate, _prefix = demo["command_prefix"]()
    if activate:  # the venv is not on PATH (make demo): the activation line comes first and is right
        assert lines[1].strip() == activate
        assert Path(activate.split()[1]).is_file()
    commands = [line.split("#")[0].strip() for line in lines if line.startswith("  hf-remote-vae")]
    assert commands and all(c.split()[1] in ("init-repo", "serve") for c in commands)
