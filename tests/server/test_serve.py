"""``hf-remote-vae serve`` as a process: start-up log lines, port opening, load failures."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import requests

from hf_remote_vae_toolkit.testing import free_port, serving_process

TOY = Path(__file__).parent / "toy_handlers"


def test_serve_logs_the_contract_lines_and_one_line_per_request() -> None:
    with serving_process(TOY / "echo") as (url, proc):
        assert requests.post(url, json={"inputs": "x"}, timeout=10).status_code == 200
        assert requests.post(url + "/predict", json={"nope": 1}, timeout=10).status_code == 400
    log = Path(proc.log_path).read_text()
    assert f"Initializing model from directory:{TOY / 'echo'}" in log
    assert f"Found custom pipeline at {TOY / 'echo' / 'handler.py'}" in log
    assert "Model initialized successfully" in log
    assert "POST / | Duration: " in log and "| Status: 200" in log
    assert "POST /predict | Duration: " in log and "| Status: 400" in log


def test_flags_override_the_environment() -> None:
    port = free_port()
    env = {**os.environ, "HF_MODEL_DIR": "/nonexistent", "PORT": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "hf_remote_vae_toolkit", "serve", "--model-dir", str(TOY / "echo"),
         "--port", str(port), "--host", "127.0.0.1"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        from hf_remote_vae_toolkit.testing import wait_healthy

        wait_healthy(f"http://127.0.0.1:{port}", 60, proc)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _serve_fails(model_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_MODEL_DIR": str(model_dir), "PORT": str(free_port()), "HOST": "127.0.0.1"}
    return subprocess.run(
        [sys.executable, "-m", "hf_remote_vae_toolkit", "serve"], env=env, capture_output=True, text=True, timeout=120
    )


def test_a_handler_that_fails_to_load_exits_non_zero_with_traceback_and_hint() -> None:
    result = _serve_fails(TOY / "broken")
    assert result.returncode != 0
    assert "Traceback" in result.stderr
    assert "FileNotFoundError: no diffusion_pytorch_model.safetensors" in result.stderr
    assert "To fix: fix EndpointHandler.__init__" in result.stderr


def test_a_directory_without_handler_exits_non_zero_with_hint(tmp_path: Path) -> None:
    result = _serve_fails(tmp_path)
    assert result.returncode != 0
    assert "no handler.py" in result.stderr
    assert "init-repo" in result.stderr


def test_python_dash_m_help_lists_serve() -> None:
    out = subprocess.run([sys.executable, "-m", "hf_remote_vae_toolkit", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "serve" in out.stdout


def _fake_hub_cache(hf_home: Path, repo_id: str, files: dict[str, str]) -> None:
    """A Hugging Face cache holding one snapshot of ``repo_id`` (the layout huggingface_hub reads)."""
    commit = "0" * 40
    repo = hf_home / "hub" / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    for name, text in files.items():
        (snapshot / name).write_text(text)


def test_hf_model_id_is_fetched_into_an_empty_model_dir_offline_from_the_cache(tmp_path: Path) -> None:
    handler = (TOY / "echo" / "handler.py").read_text()
    _fake_hub_cache(tmp_path / "hf", "org/echo", {"handler.py": handler})
    model_dir = tmp_path / "model"
    env = {"HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1", "HF_MODEL_ID": "org/echo"}
    with serving_process(model_dir, env) as (url, _):
        r = requests.post(url, json={"inputs": "from the hub"}, timeout=10)
    assert r.json()["echo"] == "from the hub"
    assert (model_dir / "handler.py").read_text() == handler
