"""``hf-remote-vae ray-serve`` as users run it: its own local Ray cluster, 2 replicas, SIGTERM to stop.

diffusers' ``remote_decode`` through it must equal the single server's answer, and stopping it must
leave no Ray process behind.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
import requests
import torch

pytest.importorskip("ray.serve", reason="needs the ray extra: pip install -e '.[ray]'")

from diffusers.utils.remote_utils import remote_decode

from hf_remote_vae_toolkit.scale.process import descendants, ray_serve_process, replica_pids
from hf_remote_vae_toolkit.testing import running_server
from hf_remote_vae_toolkit.vae.repo import init_repo

pytestmark = pytest.mark.slow


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_two_replicas_answer_diffusers_like_the_single_server_and_stop_cleanly(tmp_path: Path) -> None:
    repo = tmp_path / "sd-v1-decode"
    init_repo("sd-v1-decode", repo, random_weights="tiny")
    z = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    args = ["--replicas", "2", "--num-cpus", "0.5", "--num-gpus", "0", "--ray-num-cpus", "2"]
    with running_server(repo) as single, ray_serve_process(repo, args) as (url, proc):
        assert len(replica_pids(proc.pid)) == 2
        for kwargs in (
            {"output_type": "pt", "partial_postprocess": True, "return_type": "pt"},
            {"image_format": "png"},
        ):
            through_ray = remote_decode(endpoint=f"{url}/", tensor=z, scaling_factor=0.18215, **kwargs)
            expected = remote_decode(endpoint=f"{single}/", tensor=z, scaling_factor=0.18215, **kwargs)
            if isinstance(expected, torch.Tensor):
                assert torch.equal(through_ray, expected)
            else:  # a PIL image, or a list of them
                as_arrays = [np.asarray(i) for i in (expected if isinstance(expected, list) else [expected])]
                got = [np.asarray(i) for i in (through_ray if isinstance(through_ray, list) else [through_ray])]
                assert len(got) == len(as_arrays) and all(map(np.array_equal, got, as_arrays))
        replicas = {requests.get(f"{url}/health", timeout=10).headers["x-replica-id"] for _ in range(20)}
        assert len(replicas) == 2
        ray_processes = descendants(proc.pid)
        assert ray_processes
    assert proc.returncode == 0, open(proc.log_path).read()[-3000:]  # type: ignore[attr-defined]
    deadline = time.monotonic() + 30
    while any(_alive(p) for p in ray_processes) and time.monotonic() < deadline:
        time.sleep(0.5)
    leftover = [p for p in ray_processes if _alive(p)]
    assert not leftover, f"ray-serve left processes behind: {leftover}"
    os.unlink(proc.log_path)  # type: ignore[attr-defined]
