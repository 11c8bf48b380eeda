"""deploy/k8s and deploy/ray: every file parses, and the values that must agree with the code do.

No cluster here: these check what a typo would break (ports, probe paths, the metric the autoscalers
read, the Serve application's import path and arguments, the proxy callback on every Ray node).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import pytest
import yaml

from hf_remote_vae_toolkit.server.metrics import Metrics
from hf_remote_vae_toolkit.settings import Settings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
PROXY_CALLBACK = "hf_remote_vae_toolkit.scale.ray_serve:proxy_middlewares"


def _docs(path: Path) -> list[dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert docs, f"{path} is empty"
    return docs


def _k8s() -> dict[str, dict[str, Any]]:
    by_kind: dict[str, dict[str, Any]] = {}
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        for doc in _docs(path):
            assert {"apiVersion", "kind", "metadata"} <= set(doc), f"{path.name}: not a Kubernetes object"
            assert doc["kind"] not in by_kind, f"two {doc['kind']} objects"
            by_kind[doc["kind"]] = doc
    return by_kind


def _exported_metrics() -> str:
    return Metrics().render().decode()


def test_k8s_files_hold_the_expected_objects() -> None:
    assert set(_k8s()) == {"Deployment", "Service", "HorizontalPodAutoscaler", "ConfigMap", "ScaledObject"}


def test_deployment_service_and_probes_agree() -> None:
    objects = _k8s()
    deployment, service = objects["Deployment"], objects["Service"]
    pod = deployment["spec"]["template"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    (container,) = pod["spec"]["containers"]
    (port,) = container["ports"]
    assert port["containerPort"] == Settings().port  # the server's default port, what the image serves on
    assert service["spec"]["ports"][0]["targetPort"] in (port["name"], port["containerPort"])
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/health", "port": port["name"]}
    env = {e["name"]: e for e in container["env"]}
    known = {"HF_MODEL_ID", "HF_MODEL_DIR", "HF_HUB_TOKEN", "MAX_QUEUE_SIZE", "SHUTDOWN_GRACE_S"}
    assert set(env) <= known
    # Kubernetes kills the pod after the grace period: it must outlast the server's own drain
    assert pod["spec"]["terminationGracePeriodSeconds"] > float(env["SHUTDOWN_GRACE_S"]["value"])
    assert Settings.from_env({k: e["value"] for k, e in env.items() if "value" in e}).max_queue_size == 64
    annotations = pod["metadata"]["annotations"]
    assert (annotations["prometheus.io/port"], annotations["prometheus.io/path"]) == ("5000", "/metrics")


def test_autoscalers_target_the_deployment_on_a_metric_the_server_exports() -> None:
    objects = _k8s()
    name = objects["Deployment"]["metadata"]["name"]
    exported = _exported_metrics()
    hpa = objects["HorizontalPodAutoscaler"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert (hpa["spec"]["scaleTargetRef"]["kind"], hpa["spec"]["scaleTargetRef"]["name"]) == ("Deployment", name)
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    (metric,) = hpa["spec"]["metrics"]
    metric_name = metric["pods"]["metric"]["name"]
    assert f"\n{metric_name} " in exported, f"the server exports no {metric_name}"
    rules = yaml.safe_load(objects["ConfigMap"]["data"]["config.yaml"])["rules"]
    assert any(rule["name"]["as"] == metric_name and metric_name in rule["seriesQuery"] for rule in rules)

    keda = objects["ScaledObject"]
    assert keda["spec"]["scaleTargetRef"]["name"] == name
    assert keda["spec"]["minReplicaCount"] >= 1  # zero pods would leave the Service with no endpoint
    (trigger,) = keda["spec"]["triggers"]
    query = trigger["metadata"]["query"]
    for gauge in ("inf_queue_size", "inf_batch_current_size"):
        assert gauge in query and f"\n{gauge} " in exported
    assert float(trigger["metadata"]["threshold"]) > 0


# --------------------------------------------------------------------------- Ray


def _serve_configs() -> list[tuple[str, dict[str, Any]]]:
    config = _docs(DEPLOY / "ray" / "serve-config.yaml")[0]
    (rayservice,) = _docs(DEPLOY / "ray" / "rayservice.yaml")
    return [("serve-config.yaml", config), ("rayservice.yaml", yaml.safe_load(rayservice["spec"]["serveConfigV2"]))]


@pytest.mark.parametrize(("name", "config"), _serve_configs(), ids=lambda v: v if isinstance(v, str) else "")
def test_serve_config_is_valid_and_builds_the_application(name: str, config: dict[str, Any]) -> None:
    pytest.importorskip("ray.serve", reason="needs the ray extra: pip install -e '.[ray]'")
    from ray.serve.schema import ServeDeploySchema

    from hf_remote_vae_toolkit.scale.ray_serve import ScaleConfig

    ServeDeploySchema.model_validate(config)
    (app,) = config["applications"]
    assert app["route_prefix"] == "/"
    module, _, attr = app["import_path"].partition(":")
    builder = getattr(importlib.import_module(module), attr)
    scale = ScaleConfig.from_args(app["args"])  # unknown keys or bad bounds raise here
    assert scale.autoscaled and scale.num_gpus == 1
    assert type(builder(app["args"])).__name__ == "Application"


def test_rayservice_nodes_carry_the_proxy_callback_and_fit_the_replicas() -> None:
    (rayservice,) = _docs(DEPLOY / "ray" / "rayservice.yaml")
    cluster = rayservice["spec"]["rayClusterConfig"]
    assert tuple(int(p) for p in cluster["rayVersion"].split(".")[:2]) >= (2, 60)
    groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    for group in groups:
        for container in group["template"]["spec"]["containers"]:
            env = {e["name"]: e.get("value") for e in container.get("env", [])}
            assert env.get("RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH") == PROXY_CALLBACK, container["name"]
    # every replica wants one GPU: the GPU workers must be able to hold max_replicas of them
    args = yaml.safe_load(rayservice["spec"]["serveConfigV2"])["applications"][0]["args"]
    gpus = sum(
        group["maxReplicas"] * int(c["resources"]["limits"].get("nvidia.com/gpu", 0))
        for group in cluster["workerGroupSpecs"]
        for c in group["template"]["spec"]["containers"]
    )
    assert gpus >= args["max_replicas"] * args["num_gpus"]
    # the standalone config and the RayService deploy the same application
    assert _serve_configs()[0][1]["applications"] == _serve_configs()[1][1]["applications"]
