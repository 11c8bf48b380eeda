"""docker/entrypoint.sh, run with bash as the container would run it (no Docker engine needed).

Two tests start the real server through the entrypoint (one per env mode); the rest swap the
server for a stub ``PYTHON`` that records how it was called, so they take milliseconds. The
``HF_MODEL_ID`` mode runs offline against a Hugging Face cache built in a temporary ``HF_HOME``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests

from hf_remote_vae_toolkit.testing import free_port, wait_healthy

REPO = Path(__file__).resolve().parents[2]
ENTRYPOINT = REPO / "docker" / "entrypoint.sh"

HANDLER = """\
class EndpointHandler:
    def __init__(self, path):
        self.path = path

    def __call__(self, data):
        return {"echo": data["inputs"], "path": self.path}
"""

# what the entrypoint must not inherit from the machine running the tests
_CONTRACT_VARS = ("HF_MODEL_ID", "HF_MODEL_DIR", "HF_REVISION", "HF_HUB_TOKEN", "HF_TOKEN", "PORT", "HOST")


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _CONTRACT_VARS}
    env.update(
        PYTHON=sys.executable,
        HF_HOME=str(tmp_path / "hf-home"),
        HF_HUB_OFFLINE="1",
        HF_DEFAULT_MODEL_DIR=str(tmp_path / "default-model"),
        # requirements.txt installs stay offline and fast: satisfied lines pass, anything else fails
        PIP_NO_INDEX="1",
        PIP_DISABLE_PIP_VERSION_CHECK="1",
    )
    env.update(extra)
    return env


def _run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(ENTRYPOINT), *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def _model_dir(path: Path, requirements: str | None = None) -> Path:
    path.mkdir(parents=True)
    (path / "handler.py").write_text(HANDLER)
    if requirements is not None:
        (path / "requirements.txt").write_text(requirements)
    return path


def _cached_repo(hf_home: Path, repo_id: str, files: dict[str, str], commit: str = "0123abcd" * 5) -> None:
    """A repo as ``huggingface_hub`` leaves it in its cache: blobs, a snapshot of links, refs/main."""
    repo = hf_home / "hub" / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    for name, text in files.items():
        blob = repo / "blobs" / f"blob{len(name)}-{abs(hash(name))}"
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_text(text)
        link = snapshot / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)  # no newline: the hub writes none


@contextmanager
def _serving(env: dict[str, str], log: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = free_port()
    env = {**env, "PORT": str(port)}
    with log.open("wb") as out:
        proc = subprocess.Popen(["bash", str(ENTRYPOINT), "--host", "127.0.0.1"], env=env, stdout=out, stderr=out)
    try:
        url = f"http://127.0.0.1:{port}"
        try:
            wait_healthy(url, timeout=90, proc=proc)
        except (RuntimeError, TimeoutError):
            pytest.fail(f"the entrypoint did not bring the server up; its log:\n{log.read_text()}")
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _stub_python(tmp_path: Path) -> tuple[Path, Path]:
    """A ``PYTHON`` that runs fetch_model.py for real but records the server's command instead of serving."""
    record = tmp_path / "server-call.txt"
    stub = tmp_path / "python-stub"
    stub.write_text(
        "#!/usr/bin/env bash\n"
        f'if [[ "$1" == *fetch_model.py ]]; then exec "{sys.executable}" "$@"; fi\n'
        f'{{ printf "%s\\n" "$@"; printf "HF_MODEL_DIR=%s\\n" "$HF_MODEL_DIR"; }} > "{record}"\n'
    )
    stub.chmod(0o755)
    return stub, record


# --- the real server, both env modes ---------------------------------------------------------------


def test_model_dir_mode_installs_requirements_serves_and_sigterm_reaches_the_server(tmp_path: Path) -> None:
    # `requests` is installed already, so pip succeeds offline without touching the environment
    model = _model_dir(tmp_path / "repo", requirements="requests\n")
    env = _env(tmp_path, HF_MODEL_DIR=str(model))
    log = tmp_path / "entrypoint.log"
    with _serving(env, log) as (url, proc):
        r = requests.post(url, json={"inputs": "hello"}, timeout=10)
        assert r.status_code == 200
        assert r.json() == {"echo": "hello", "path": str(model)}
        # exec: the PID we started as bash is now the server itself, so the platform's SIGTERM lands on it
        cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes().split(b"\0")
        assert b"hf_remote_vae_toolkit" in cmdline and b"serve" in cmdline, cmdline
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
    text = log.read_text()
    # uvicorn drains and stops the app, then may re-raise the signal it caught (exit by SIGTERM)
    assert code in (0, -signal.SIGTERM), text
    assert "Application shutdown complete" in text or "Finished server process" in text, text
    assert f"installing {model}/requirements.txt" in text


def test_model_id_mode_downloads_from_the_offline_cache_into_the_default_dir(tmp_path: Path) -> None:
    _cached_repo(tmp_path / "hf-home", "org/echo-vae", {"handler.py": HANDLER, "vae/config.json": "{}"})
    env = _env(tmp_path, HF_MODEL_ID="org/echo-vae")
    default_dir = Path(env["HF_DEFAULT_MODEL_DIR"])
    with _serving(env, tmp_path / "entrypoint.log") as (url, proc):
        r = requests.post(url, json={"inputs": 3}, timeout=10)
        assert r.json() == {"echo": 3, "path": str(default_dir)}
        proc.terminate()
        proc.wait(timeout=30)
    # links into the cache, not copies: the weights are stored once
    assert (default_dir / "handler.py").is_symlink()
    assert (default_dir / "handler.py").read_text() == HANDLER
    assert (default_dir / "vae" / "config.json").read_text() == "{}"


# --- start-up errors: a clear message and exit 1 ----------------------------------------------------


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ({}, "neither HF_MODEL_ID nor HF_MODEL_DIR is set"),
        ({"HF_MODEL_ID": "org/name", "HF_MODEL_DIR": "/repository"}, "both HF_MODEL_ID (org/name) and HF_MODEL_DIR"),
        ({"HF_MODEL_ID": "", "HF_MODEL_DIR": ""}, "neither HF_MODEL_ID nor HF_MODEL_DIR is set"),
    ],
)
def test_exactly_one_of_model_id_and_model_dir(tmp_path: Path, variables: dict[str, str], message: str) -> None:
    result = _run(_env(tmp_path, **variables))
    assert result.returncode == 1
    assert message in result.stderr
    assert "set exactly one" in result.stderr


def test_missing_model_dir_is_fatal(tmp_path: Path) -> None:
    result = _run(_env(tmp_path, HF_MODEL_DIR=str(tmp_path / "nowhere")))
    assert result.returncode == 1
    assert f"HF_MODEL_DIR={tmp_path / 'nowhere'} is not a directory" in result.stderr


def test_failing_requirements_stop_the_start(tmp_path: Path) -> None:
    model = _model_dir(tmp_path / "repo", requirements="no-such-package-hf-remote-vae==0.0.1\n")
    result = _run(_env(tmp_path, HF_MODEL_DIR=str(model)))
    assert result.returncode == 1
    assert f"installing {model}/requirements.txt failed (pip exit 1" in result.stderr
    assert "no-such-package-hf-remote-vae" in result.stderr  # pip's own reason is shown, not swallowed
    assert "starting the server" not in result.stderr


def test_model_id_not_in_cache_is_fatal(tmp_path: Path) -> None:
    result = _run(_env(tmp_path, HF_MODEL_ID="org/not-cached"))
    assert result.returncode == 1
    assert "could not download org/not-cached@main" in result.stderr
    assert "check HF_MODEL_ID and HF_REVISION" in result.stderr
    assert not Path(_env(tmp_path)["HF_DEFAULT_MODEL_DIR"]).exists()  # no half-filled directory left behind


# --- how the server is called (stub PYTHON, no server) ------------------------------------------------


def test_server_command_default_port_and_passed_arguments(tmp_path: Path) -> None:
    stub, record = _stub_python(tmp_path)
    model = _model_dir(tmp_path / "repo")
    result = _run(_env(tmp_path, HF_MODEL_DIR=str(model), PYTHON=str(stub)), "--host", "127.0.0.1")
    assert result.returncode == 0, result.stderr
    assert record.read_text().splitlines() == [
        "-m",
        "hf_remote_vae_toolkit",
        "serve",
        "--model-dir",
        str(model),
        "--port",
        "5000",
        "--host",
        "127.0.0.1",
        f"HF_MODEL_DIR={model}",
    ]


def test_model_id_with_a_filled_default_dir_skips_the_download(tmp_path: Path) -> None:
    stub, record = _stub_python(tmp_path)
    env = _env(tmp_path, HF_MODEL_ID="org/not-cached", PYTHON=str(stub), PORT="8080")
    default_dir = _model_dir(Path(env["HF_DEFAULT_MODEL_DIR"]))
    result = _run(env)
    assert result.returncode == 0, result.stderr
    assert "is not empty; using it as is" in result.stderr
    lines = record.read_text().splitlines()
    assert lines[3:7] == ["--model-dir", str(default_dir), "--port", "8080"]
    assert lines[-1] == f"HF_MODEL_DIR={default_dir}"  # exported for the server, which will not download again
