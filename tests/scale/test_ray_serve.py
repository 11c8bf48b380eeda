"""The server as Ray Serve replicas, on a real local Ray cluster (2 CPUs, no dashboard), tiny real VAEs.

Each test deploys what it needs over the previous deployment (same app name) and talks to Ray's real
HTTP proxy with diffusers' client, our client and raw requests; the module's last step shuts Serve
and Ray down. Slow (a cluster start and five deployments on two cores): CI's full tier runs it.
"""

from __future__ import annotations

import collections
import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
import torch

pytest.importorskip("ray.serve", reason="needs the ray extra: pip install -e '.[ray]'")

import ray
from diffusers.utils.remote_utils import remote_decode as diffusers_remote_decode
from ray import serve

from hf_remote_vae_toolkit.client import Retry, remote_decode
from hf_remote_vae_toolkit.scale.ray_serve import (
    APP_NAME,
    CLUSTER_ENV,
    build_app,
)
from hf_remote_vae_toolkit.testing import free_port, running_server
from hf_remote_vae_toolkit.vae.repo import init_repo

pytestmark = [
    pytest.mark.slow,
    # Ray validates the deployment's autoscaling config again in serve.status(); see METRICS_INTERVAL_S
    pytest.mark.filterwarnings("ignore:.*metrics_interval_s.*:DeprecationWarning"),
]

SCALING = 0.18215


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ray") / "sd-v1-decode"
    init_repo("sd-v1-decode", out, random_weights="tiny")
    return out


@pytest.fixture(scope="module")
def single_url(repo: Path) -> Iterator[str]:
    with running_server(repo) as url:
        yield url


@pytest.fixture(scope="module")
def proxy_url() -> Iterator[str]:
    """Ray's HTTP proxy of a local cluster started for this module (and stopped after it)."""
    previous = {key: os.environ.get(key) for key in CLUSTER_ENV}
    os.environ.update(CLUSTER_ENV)  # inherited by the cluster's processes
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=100 * 1024**2, log_to_driver=False)
    try:
        port = free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()
        ray.shutdown()
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _deploy(repo: Path, **args: Any) -> None:
    options = {"model_dir": str(repo), "num_cpus": 0.5, **args}
    serve.run(build_app(options), name=APP_NAME, route_prefix="/")


def _latents(size: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(1, 4, size, size, generator=torch.Generator().manual_seed(seed))


def _post(url: str, z: torch.Tensor, timeout: float = 120) -> requests.Response:
    params = {"shape": list(z.shape), "dtype": "float32", "output_type": "pt", "partial_postprocess": "true"}
    params["scaling_factor"] = str(SCALING)
    return requests.post(
        f"{url}/",
        params=params,
        data=z.numpy().tobytes(),
        headers={"Content-Type": "tensor/binary", "Accept": "tensor/binary"},
        timeout=timeout,
    )


def _post_until_done(url: str, z: torch.Tensor, attempts: int = 8) -> list[tuple[int, str | None, str | None]]:
    """Post, retrying 429/503 after Retry-After; every answer as (status, X-Replica-Id, Retry-After)."""
    seen = []
    for _ in range(attempts):
        response = _post(url, z)
        seen.append((response.status_code, response.headers.get("x-replica-id"), response.headers.get("retry-after")))
        if response.status_code not in (429, 503):
            break
        time.sleep(float(response.headers.get("retry-after", "1")))
    return seen


def _replica_counts() -> dict[str, int]:
    deployment = serve.status().applications[APP_NAME].deployments["VAEReplica"]
    return {str(state): count for state, count in deployment.replica_states.items()}


# --------------------------------------------------------------------------- 1. same answers, both replicas


def test_two_replicas_answer_diffusers_like_the_single_server(proxy_url: str, single_url: str, repo: Path) -> None:
    _deploy(repo, replicas=2)
    z = _latents(8)
    for kwargs in (
        {"output_type": "pt", "partial_postprocess": True, "return_type": "pt"},  # uint8 tensor
        {"output_type": "pil", "image_format": "png"},
        {"output_type": "pt", "return_type": "pt"},  # float tensor
    ):
        through_ray = diffusers_remote_decode(endpoint=f"{proxy_url}/", tensor=z, scaling_factor=SCALING, **kwargs)
        single = diffusers_remote_decode(endpoint=f"{single_url}/", tensor=z, scaling_factor=SCALING, **kwargs)
        if isinstance(single, torch.Tensor):
            assert through_ray.dtype == single.dtype and through_ray.shape == single.shape
            torch.testing.assert_close(through_ray, single, rtol=0, atol=1e-6 if single.is_floating_point() else 0)
        else:
            np.testing.assert_array_equal(np.asarray(through_ray), np.asarray(single))

    # concurrent requests: each answer equals the single server's for its latents, both replicas serve
    inputs = [_latents(8, seed) for seed in range(16)]
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda x: _post(proxy_url, x), inputs))
    assert [a.status_code for a in answers] == [200] * 16
    for z_i, answer in zip(inputs, answers):
        expected = _post(single_url, z_i)
        assert answer.content == expected.content
        assert (answer.headers["shape"], answer.headers["dtype"]) == (expected.headers["shape"], "uint8")
        assert answer.headers["x-request-id"]
    assert len({a.headers["x-replica-id"] for a in answers}) == 2


def test_errors_keep_their_status_and_body(proxy_url: str, single_url: str) -> None:
    bad_shape = {"shape": [1, 4, 8], "dtype": "float32"}
    for url in (proxy_url, single_url):
        assert requests.get(f"{url}/health", timeout=10).status_code == 200
    through_ray = requests.post(f"{proxy_url}/", params=bad_shape, data=b"\0" * 12, timeout=30)
    single = requests.post(f"{single_url}/", params=bad_shape, data=b"\0" * 12, timeout=30)
    assert (through_ray.status_code, through_ray.json()) == (single.status_code, single.json())
    assert through_ray.status_code == 400 and through_ray.headers["x-replica-id"]
    accept = {"Accept": "application/x-nope"}
    through_ray = requests.post(f"{proxy_url}/", params=bad_shape, headers=accept, timeout=30)
    single = requests.post(f"{single_url}/", params=bad_shape, headers=accept, timeout=30)
    assert (through_ray.status_code, through_ray.json()) == (single.status_code, single.json()) == (406, single.json())
    # a client's request id comes back once, as from the single server
    for url in (proxy_url, single_url):
        answer = requests.post(f"{url}/", params=bad_shape, headers={"X-Request-Id": "abc123"}, timeout=30)
        assert answer.headers["x-request-id"] == "abc123"
    metrics = requests.get(f"{proxy_url}/metrics", timeout=10)
    assert "inf_queue_size" in metrics.text


# --------------------------------------------------------------------------- 2. 429s, and our client retrying them


def test_full_queues_answer_429_with_retry_after_and_our_client_retries(proxy_url: str, repo: Path) -> None:
    # one replica whose own queue holds 1; Ray sends it 3 at a time and holds 2 more, then refuses
    _deploy(repo, replicas=1, max_ongoing_requests=3, max_queued_requests=2, settings={"max_queue_size": 1})
    z = _latents(48)
    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(lambda _: _post(proxy_url, z), range(12)))
    statuses = collections.Counter(a.status_code for a in answers)
    assert set(statuses) <= {200, 429}, statuses
    refused = [a for a in answers if a.status_code == 429]
    by_replica = [a for a in refused if "x-replica-id" in a.headers]  # the app's scheduler: queue full
    by_ray = [a for a in refused if "x-replica-id" not in a.headers]  # Ray's back-pressure
    assert by_replica and by_ray, statuses
    for answer in refused:
        assert int(answer.headers["retry-after"]) >= 1
        assert answer.headers["content-type"] == "application/json"
        assert answer.json()["error"]
    assert "queue is full" in by_replica[0].json()["error"]

    # the same burst through our client: every call succeeds, the 429s retried after Retry-After
    policy = Retry(total=20, backoff_max=2.0)
    with ThreadPoolExecutor(8) as pool:
        images = list(pool.map(lambda _: remote_decode(proxy_url, z, scaling_factor=SCALING, retries=policy), range(8)))
    assert all(image.size == (384, 384) for image in images)
    assert all(np.array_equal(np.asarray(images[0]), np.asarray(image)) for image in images)


# --------------------------------------------------------------------------- 3. a replica dies mid-load


def test_a_replica_killed_mid_load_loses_no_request(proxy_url: str, repo: Path) -> None:
    _deploy(repo, replicas=2, max_ongoing_requests=4)
    z = _latents(96)
    warm = [_post(proxy_url, _latents(8, s)) for s in range(6)]
    victim = next(a.headers["x-replica-id"] for a in warm)
    actors = [a for a in ray.util.list_named_actors(all_namespaces=True) if a["name"].endswith(f"#{victim}")]
    assert len(actors) == 1, actors

    with ThreadPoolExecutor(24) as pool:
        futures = [pool.submit(_post_until_done, proxy_url, z) for _ in range(24)]
        time.sleep(1.0)  # both replicas busy, each with requests running and queued
        ray.kill(ray.get_actor(actors[0]["name"], namespace=actors[0]["namespace"]), no_restart=True)
        histories = [f.result() for f in futures]

    final = [h[-1][0] for h in histories]
    retried = [h for h in histories if len(h) > 1]
    failures = [answer for h in histories for answer in h[:-1]]
    assert final == [200] * 24, histories  # nothing lost
    assert retried, f"the kill hit no request in flight, the test tested nothing: {histories}"
    assert {status for status, _, _ in failures} == {503}, failures
    assert all(replica is None and retry_after == "1" for _, replica, retry_after in failures), failures
    # the survivor served the retries; Serve replaces the dead replica
    assert all(h[-1][1] != victim for h in retried)
    deadline = time.monotonic() + 60
    while _replica_counts().get("RUNNING", 0) < 2 and time.monotonic() < deadline:
        time.sleep(1)
    assert _replica_counts().get("RUNNING") == 2


# --------------------------------------------------------------------------- 4. autoscaling on queued work


def test_autoscales_up_under_a_burst_and_back_down_when_idle(proxy_url: str, repo: Path) -> None:
    # Ray hands each replica 2 requests at a time and holds the rest, so a new replica has work to take
    _deploy(
        repo,
        min_replicas=1,
        max_replicas=2,
        target_backlog_s=0.5,
        upscale_delay_s=0.0,
        downscale_delay_s=2.0,
        max_ongoing_requests=2,
    )
    assert _replica_counts() == {"RUNNING": 1}
    z = _latents(64)
    stop = threading.Event()
    peak = 1

    def watch() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, _replica_counts().get("RUNNING", 0))
            time.sleep(0.5)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        with ThreadPoolExecutor(12) as pool:
            answers = list(pool.map(lambda _: _post(proxy_url, z), range(60)))
    finally:
        stop.set()
        watcher.join()
    assert [a.status_code for a in answers] == [200] * 60
    assert peak == 2, "a burst of 60 slow requests did not add a replica"
    assert len({a.headers["x-replica-id"] for a in answers}) == 2, "the added replica took no work"
    deadline = time.monotonic() + 60
    while _replica_counts() != {"RUNNING": 1} and time.monotonic() < deadline:
        time.sleep(1)
    assert _replica_counts() == {"RUNNING": 1}, "idle, the deployment did not scale back down"


def test_scales_to_zero_when_idle_and_a_request_wakes_it(proxy_url: str, repo: Path) -> None:
    _deploy(repo, min_replicas=0, max_replicas=1, downscale_delay_s=1.0)
    deadline = time.monotonic() + 60
    while _replica_counts().get("RUNNING", 0) and time.monotonic() < deadline:
        time.sleep(1)
    assert _replica_counts().get("RUNNING", 0) == 0, "idle, the deployment did not scale to zero"
    started = time.monotonic()
    answer = _post(proxy_url, _latents(8))  # held in Ray's proxy while a replica starts: no 503
    assert answer.status_code == 200, answer.text
    assert _replica_counts().get("RUNNING") == 1
    assert time.monotonic() - started < 120
