"""The Ray Serve pieces that need no cluster: the autoscaling policy, the options, the proxy errors, the CLI.

``RayErrorResponses`` runs here in front of small ASGI apps that answer the way Ray's proxy does
(plain-text 429, no answer at all when a replica dies); the real proxy is in test_ray_serve.py.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import pytest

pytest.importorskip("ray.serve", reason="needs the ray extra: pip install -e '.[ray]'")

from starlette.testclient import TestClient

from hf_remote_vae_toolkit import cli
from hf_remote_vae_toolkit.scale.cli import scale_args
from hf_remote_vae_toolkit.scale.ray_serve import (
    DEFAULT_SECONDS_PER_REQUEST,
    QueueBacklogPolicy,
    RayErrorResponses,
    ReplicaHeaders,
    ScaleConfig,
)

# --------------------------------------------------------------------------- autoscaling policy


def _metrics(**per_replica: list[float]) -> dict[str, dict[str, float]]:
    return {name: {f"r{i}": v for i, v in enumerate(values)} for name, values in per_replica.items()}


def test_policy_scales_on_seconds_of_queued_work_not_request_counts() -> None:
    policy = QueueBacklogPolicy(target_backlog_s=2.0)
    # 4 cheap requests (0.05 s each) on one replica: 0.2 s of work, one replica is plenty
    cheap = _metrics(backlog_s=[0.2], in_flight=[4], seconds_per_request=[0.05])
    assert policy.desired_replicas(cheap, requests_at_ray=4) == 1
    # 4 video decodes (3 s each): 12 s of work -> 6 replicas at 2 s each
    videos = _metrics(backlog_s=[12.0], in_flight=[4], seconds_per_request=[3.0])
    assert policy.desired_replicas(videos, requests_at_ray=4) == 6


def test_policy_counts_requests_waiting_in_rays_proxy_at_the_mean_service_time() -> None:
    policy = QueueBacklogPolicy(target_backlog_s=1.0)
    metrics = _metrics(backlog_s=[1.0, 1.0], in_flight=[2, 2], seconds_per_request=[0.5, 0.5])
    # 4 in the replicas + 6 more held by Ray: 2 s + 6 x 0.5 s = 5 s
    assert policy.desired_replicas(metrics, requests_at_ray=10) == 5


def test_policy_weighs_service_times_by_requests_served() -> None:
    policy = QueueBacklogPolicy(target_backlog_s=1.0)
    # a replica that served 100 requests at 1 s, a new one (nothing served, the default 0.05 s); 4 wait at Ray
    metrics = _metrics(
        backlog_s=[0.0, 0.0], in_flight=[0, 0], seconds_per_request=[1.0, DEFAULT_SECONDS_PER_REQUEST], handled=[100, 0]
    )
    assert policy.desired_replicas(metrics, requests_at_ray=4) == 4  # 4 x 1 s, not 4 x 0.525 s


def test_policy_idle_is_zero_and_any_work_is_at_least_one() -> None:
    policy = QueueBacklogPolicy()
    assert policy.desired_replicas({}, requests_at_ray=0) == 0
    # a cold start: no replica metrics yet, one request waiting at Ray
    assert policy.desired_replicas({}, requests_at_ray=1) == 1
    assert DEFAULT_SECONDS_PER_REQUEST < policy.target_backlog_s


class _Ctx:
    def __init__(self, metrics: dict[str, Any], requests: float, low: int, high: int) -> None:
        self.aggregated_metrics = metrics
        self.total_num_requests = requests
        self.capacity_adjusted_min_replicas = low
        self.capacity_adjusted_max_replicas = high


def test_policy_call_clamps_to_the_deployments_bounds() -> None:
    policy = QueueBacklogPolicy(target_backlog_s=1.0)
    busy = _metrics(backlog_s=[30.0], in_flight=[10], seconds_per_request=[3.0])
    assert policy(_Ctx(busy, 10, low=1, high=4)) == (4, {})
    assert policy(_Ctx({}, 0, low=1, high=4)) == (1, {})
    assert policy(_Ctx({}, 0, low=0, high=4)) == (0, {})  # scale to zero when allowed


def test_policy_rejects_a_nonpositive_target() -> None:
    with pytest.raises(ValueError, match="target_backlog_s must be positive"):
        QueueBacklogPolicy(target_backlog_s=0)


# --------------------------------------------------------------------------- options


def test_fixed_replicas_options() -> None:
    options = ScaleConfig(model_dir="/m", replicas=2, num_gpus=1).deployment_options()
    assert options["num_replicas"] == 2
    assert "autoscaling_config" not in options
    assert options["ray_actor_options"] == {"num_cpus": 1.0, "num_gpus": 1}
    assert options["backpressure_config"] == {"status_code": 429, "retry_after_s": 1.0}


def test_autoscaled_options_use_the_backlog_policy() -> None:
    config = ScaleConfig(min_replicas=0, max_replicas=3, target_backlog_s=4.0)
    auto = config.deployment_options()["autoscaling_config"]
    assert (auto["min_replicas"], auto["max_replicas"], auto["initial_replicas"]) == (0, 3, 1)
    assert auto["policy"] == {
        "policy_function": "hf_remote_vae_toolkit.scale.ray_serve:QueueBacklogPolicy",
        "policy_kwargs": {"target_backlog_s": 4.0},
    }


def test_replica_settings_carry_the_model_dir_and_server_settings() -> None:
    config = ScaleConfig.from_args({"model_dir": "/m", "settings": {"max_queue_size": 3}})
    assert config.replica_settings() == {"max_queue_size": 3, "model_dir": "/m"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"replicas": 2, "max_replicas": 3}, "either replicas"),
        ({"replicas": 0}, "replicas must be at least 1"),
        ({"min_replicas": 3, "max_replicas": 2}, "min_replicas must be between 0 and max_replicas"),
        ({"min_replicas": 1}, "max_replicas must be at least 1"),
        ({"num_gpus": -1}, "num_gpus must not be negative"),
        ({"max_queued_requests": 0}, "max_queued_requests must be at least 1"),
        ({"replica": 2}, r"unknown ray-serve option\(s\) \['replica'\]"),
        ({"settings": {"max_queue": 3}}, r"unknown server settings \['max_queue'\]"),
    ],
)
def test_bad_options_are_clear_errors(args: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ScaleConfig.from_args(args)


# --------------------------------------------------------------------------- CLI


def _parse(*argv: str) -> argparse.Namespace:
    return cli.build_parser().parse_args(["ray-serve", *argv])


def test_cli_fixed_and_autoscaled() -> None:
    fixed = scale_args(_parse("--model-dir", "/m", "--replicas", "2", "--num-gpus", "0"))
    assert (fixed["replicas"], fixed["model_dir"], fixed["num_gpus"]) == (2, "/m", 0)
    auto = scale_args(_parse("--min-replicas", "0", "--max-replicas", "4", "--num-gpus", "1"))
    assert (auto["min_replicas"], auto["max_replicas"], "replicas" in auto) == (0, 4, False)
    ScaleConfig.from_args(auto)  # valid


def test_cli_rejects_replicas_with_autoscaling() -> None:
    with pytest.raises(ValueError, match="either --replicas or --min-replicas"):
        scale_args(_parse("--replicas", "2", "--max-replicas", "4"))


def test_cli_returns_2_on_bad_options(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["ray-serve", "--min-replicas", "3", "--max-replicas", "1", "--num-gpus", "0"]) == 2


# --------------------------------------------------------------------------- ASGI wrappers


def _plain_app(status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> Any:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return app


def test_rays_own_429_becomes_json_and_keeps_its_retry_after() -> None:
    app = _plain_app(429, b"Request dropped due to backpressure.", [(b"retry-after", b"3"), (b"content-type", b"x")])
    response = TestClient(RayErrorResponses(app)).post("/")
    assert response.status_code == 429
    assert response.headers["retry-after"] == "3"
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"error": "Request dropped due to backpressure."}


def test_rays_503_without_retry_after_gets_one() -> None:
    response = TestClient(RayErrorResponses(_plain_app(503, b"no replica", []))).post("/")
    assert (response.status_code, response.headers["retry-after"]) == (503, "1")
    assert response.json() == {"error": "no replica"}


def test_a_replicas_answer_passes_untouched() -> None:
    headers = [(b"x-replica-id", b"abc"), (b"content-type", b"application/json")]
    app = _plain_app(500, b'{"error":"the handler failed"}', headers)
    response = TestClient(RayErrorResponses(app)).post("/")
    assert response.status_code == 500
    assert response.content == b'{"error":"the handler failed"}'
    assert "retry-after" not in response.headers


def test_no_answer_at_all_is_a_retryable_503() -> None:
    async def died(scope: Any, receive: Any, send: Any) -> None:
        return None  # what Ray's proxy does when the replica died mid-request

    response = TestClient(RayErrorResponses(died)).post("/")
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert "died" in json.loads(response.content)["error"]


def test_replica_headers_add_the_replica_and_keep_one_request_id() -> None:
    app = _plain_app(200, b"ok", [(b"x-request-id", b"ours"), (b"shape", b"[1,3,8,8]")])
    response = TestClient(ReplicaHeaders(app, "r-1")).post("/")
    assert response.headers["x-replica-id"] == "r-1"
    assert response.headers["shape"] == "[1,3,8,8]"
    assert "x-request-id" not in response.headers  # Ray's proxy adds it, once


# --------------------------------------------------------------------------- what a replica reports


@pytest.mark.slow  # loads and warms a tiny VAE: ~10 s on 2 busy cores
def test_replica_stats_read_the_apps_own_metrics(tmp_path: Any) -> None:
    """The names replica_stats reads must be the server's: after one decode it has served 1, in ~its time."""
    import time

    import torch

    from hf_remote_vae_toolkit.scale.ray_serve import replica_stats
    from hf_remote_vae_toolkit.server.app import create_app
    from hf_remote_vae_toolkit.settings import Settings
    from hf_remote_vae_toolkit.vae.repo import init_repo

    repo = init_repo("sd-v1-decode", tmp_path / "repo", random_weights="tiny")
    app = create_app(Settings(model_dir=str(repo)))
    with TestClient(app) as client:
        idle = replica_stats(app)
        assert idle == {
            "in_flight": 0.0,
            "queued": 0.0,
            "handled": 0.0,
            "seconds_per_request": DEFAULT_SECONDS_PER_REQUEST,
            "backlog_s": 0.0,
        }
        z = torch.zeros(1, 4, 8, 8)
        started = time.perf_counter()
        response = client.post(
            "/",
            params={"shape": [1, 4, 8, 8], "dtype": "float32", "output_type": "pt"},
            content=z.numpy().tobytes(),
            headers={"Content-Type": "tensor/binary", "Accept": "tensor/binary"},
        )
        elapsed = time.perf_counter() - started
        assert response.status_code == 200, response.text
        served = replica_stats(app)
    assert served["handled"] == 1.0 and served["in_flight"] == 0.0 and served["backlog_s"] == 0.0
    assert 0.0 < served["seconds_per_request"] <= elapsed
