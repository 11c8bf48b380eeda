"""The server as Ray Serve replicas: one project app per replica, behind Ray's HTTP proxy.

Each replica runs the project's own app (``server.app.create_app``: handler load and warm-up in the
lifespan, scheduler, batching, memory admission, metrics) on one GPU (or CPU), as a Serve ASGI
ingress, so Ray's proxy passes the raw request in and the app's response out: the tensor protocol
(binary bodies, ``shape``/``dtype`` headers, statuses, ``Retry-After``) is the single server's. On top:

- ``X-Replica-Id`` on every response (``ReplicaHeaders``), the Serve replica that answered;
- ``RayErrorResponses``, installed in Ray's proxy: answers Ray makes itself (its back-pressure,
  no replica available, a replica that died before answering) become the project's JSON errors with
  ``Retry-After``, and a request whose replica died mid-way gets a retryable 503 instead of a bare 500;
- ``QueueBacklogPolicy``: autoscaling on queued work. Each replica reports (``record_autoscaling_stats``)
  its requests in flight and their expected service time from its own metrics; the policy asks for
  enough replicas that each has about ``target_backlog_s`` seconds of work.

``build_app(args)`` is the application builder: ``hf-remote-vae ray-serve`` calls it, and a Serve config
file names it (``import_path: hf_remote_vae_toolkit.scale.ray_serve:build_app``, see ``deploy/ray/``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import warnings
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Any

from ray import serve

from ..settings import Settings

__all__ = [
    "APP_NAME",
    "CLUSTER_ENV",
    "PROXY_CALLBACK_ENV",
    "PROXY_CALLBACK_PATH",
    "HEADER_REPLICA_ID",
    "ScaleConfig",
    "QueueBacklogPolicy",
    "ReplicaHeaders",
    "RayErrorResponses",
    "VAEReplica",
    "build_app",
    "proxy_middlewares",
    "replica_stats",
]

log = logging.getLogger("hf_remote_vae_toolkit")

APP_NAME = "hf-remote-vae"
HEADER_REPLICA_ID = "X-Replica-Id"
#: Ray reads this in its HTTP proxy process when the proxy starts: set it in the environment of every
#: Ray node (``hf-remote-vae ray-serve`` does so for the cluster it starts itself).
PROXY_CALLBACK_ENV = "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"
PROXY_CALLBACK_PATH = "hf_remote_vae_toolkit.scale.ray_serve:proxy_middlewares"
#: Service time assumed before a replica has served anything (a 512² SD decode on a GPU is ~0.05 s).
DEFAULT_SECONDS_PER_REQUEST = 0.05
#: The environment every Ray node needs (Ray's processes read it when they start): the proxy callback.
CLUSTER_ENV = {PROXY_CALLBACK_ENV: PROXY_CALLBACK_PATH}
#: How often replicas push their load to the autoscaler. Ray's default, 10 s, reacts late to a burst. Ray
#: 2.60 deprecates the field (a DeprecationWarning where the config is validated) in favour of
#: environment variables that it does not read yet; the field is what takes effect.
METRICS_INTERVAL_S = 1.0

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class ScaleConfig:
    """How the deployment scales. Fixed: ``replicas``. Autoscaled: ``min_replicas`` / ``max_replicas``."""

    model_dir: str | None = None
    replicas: int | None = None
    min_replicas: int | None = None
    max_replicas: int | None = None
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    #: requests Ray sends one replica at a time; the replica's own scheduler queues and batches them
    max_ongoing_requests: int = 8
    #: requests waiting in Ray's proxy for a replica; beyond it Ray answers 429 + Retry-After
    max_queued_requests: int = 256
    retry_after_s: float = 1.0
    target_backlog_s: float = 2.0
    upscale_delay_s: float = 5.0
    downscale_delay_s: float = 60.0
    #: other server settings for every replica (``Settings`` field names: ``max_queue_size``, ...)
    settings: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        autoscaled = self.min_replicas is not None or self.max_replicas is not None
        if self.replicas is not None and autoscaled:
            raise ValueError(
                "give either replicas (a fixed count) or min_replicas/max_replicas (autoscaling), not both"
            )
        if self.replicas is not None and self.replicas < 1:
            raise ValueError(f"replicas must be at least 1, got {self.replicas}")
        if autoscaled:
            low, high = self.min_replicas or 0, self.max_replicas
            if high is None or high < 1:
                raise ValueError(f"max_replicas must be at least 1 when autoscaling, got {high}")
            if low < 0 or low > high:
                raise ValueError(f"min_replicas must be between 0 and max_replicas ({high}), got {low}")
        for name in ("num_cpus", "num_gpus"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative, got {getattr(self, name)}")
        for name in ("max_ongoing_requests", "max_queued_requests"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.target_backlog_s <= 0:
            raise ValueError(f"target_backlog_s must be positive, got {self.target_backlog_s}")
        known = {f.name for f in dataclasses.fields(Settings)}
        unknown = sorted(set(self.settings) - known)
        if unknown:
            raise ValueError(f"unknown server settings {unknown}; known: {sorted(known)}")

    @property
    def autoscaled(self) -> bool:
        return self.replicas is None and (self.min_replicas is not None or self.max_replicas is not None)

    @classmethod
    def from_args(cls, args: Mapping[str, Any] | None) -> ScaleConfig:
        """From a Serve config's ``args`` (or the CLI); unknown keys are an error, not ignored."""
        args = dict(args or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(args) - known)
        if unknown:
            raise ValueError(f"unknown ray-serve option(s) {unknown}; known: {sorted(known)}")
        return cls(**args)

    def replica_settings(self) -> dict[str, Any]:
        """What each replica overrides on ``Settings.from_env(os.environ)``."""
        overrides = dict(self.settings)
        if self.model_dir is not None:
            overrides["model_dir"] = self.model_dir
        return overrides

    def deployment_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {
            "name": "VAEReplica",
            "ray_actor_options": {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus},
            "max_ongoing_requests": self.max_ongoing_requests,
            "max_queued_requests": self.max_queued_requests,
            "backpressure_config": {"status_code": 429, "retry_after_s": self.retry_after_s},
            "health_check_period_s": 5.0,
            "graceful_shutdown_timeout_s": float(self.settings.get("shutdown_grace_s", 30.0)),
        }
        if self.autoscaled:
            options["autoscaling_config"] = {
                "min_replicas": self.min_replicas or 0,
                "max_replicas": self.max_replicas,
                "initial_replicas": max(1, self.min_replicas or 0),
                "upscale_delay_s": self.upscale_delay_s,
                "downscale_delay_s": self.downscale_delay_s,
                "metrics_interval_s": METRICS_INTERVAL_S,
                "look_back_period_s": 5.0,
                "policy": {
                    "policy_function": f"{__name__}:QueueBacklogPolicy",
                    "policy_kwargs": {"target_backlog_s": self.target_backlog_s},
                },
            }
        else:
            options["num_replicas"] = self.replicas or 1
        return options


# --------------------------------------------------------------------------- autoscaling


def replica_stats(app: Any) -> dict[str, float]:
    """A replica's load, from the app's own metrics: what ``record_autoscaling_stats`` reports.

    ``in_flight``: requests inside the app (queued, running or being encoded); ``queued``: the scheduler's
    queue (``inf_queue_size``); ``handled``: requests its handler has run; ``seconds_per_request``: their
    mean handler time (a default before the first); ``backlog_s``: ``in_flight x seconds_per_request``,
    the work this replica has yet to do.
    """
    registry = app.state.metrics.registry

    def value(name: str) -> float:
        return float(registry.get_sample_value(name) or 0.0)

    handled = value("hf_vae_batch_size_sum")  # requests that went through the handler
    per_request = value("hf_vae_handler_seconds_sum") / handled if handled else DEFAULT_SECONDS_PER_REQUEST
    in_flight = value("hf_vae_requests_in_flight")
    return {
        "in_flight": in_flight,
        "queued": value("inf_queue_size"),
        "handled": handled,
        "seconds_per_request": per_request,
        "backlog_s": in_flight * per_request,
    }


class QueueBacklogPolicy:
    """Ray Serve autoscaling policy: replicas = queued work (seconds) / ``target_backlog_s``.

    Work is what the replicas report (``backlog_s``) plus the requests Ray holds in its proxy waiting
    for a replica, each costed at the replicas' mean service time. A burst of cheap requests and a few
    long video decodes are weighed by the time they need, not by their count. Ray applies the
    up/down-scale delays and factors to the result; this clamps it to min/max replicas.
    """

    def __init__(self, target_backlog_s: float = 2.0) -> None:
        if target_backlog_s <= 0:
            raise ValueError(f"target_backlog_s must be positive, got {target_backlog_s}")
        self.target_backlog_s = float(target_backlog_s)

    def desired_replicas(self, metrics: Mapping[str, Mapping[Any, float]], requests_at_ray: float) -> int:
        """The replica count for ``metrics`` (name -> replica -> value) and Ray's ongoing request count."""
        backlog = sum(metrics.get("backlog_s", {}).values())
        in_flight = sum(metrics.get("in_flight", {}).values())
        # the replicas' mean service time, weighted by what each has served (a new replica knows nothing yet)
        rates, counts = metrics.get("seconds_per_request", {}), metrics.get("handled", {})
        served = sum(counts.get(replica, 0.0) for replica in rates)
        if served > 0:
            per_request = sum(rate * counts.get(replica, 0.0) for replica, rate in rates.items()) / served
        elif rates:
            per_request = sum(rates.values()) / len(rates)
        else:
            per_request = DEFAULT_SECONDS_PER_REQUEST
        waiting_at_ray = max(0.0, requests_at_ray - in_flight)
        work_s = backlog + waiting_at_ray * per_request
        if work_s <= 0 and requests_at_ray <= 0:
            return 0
        return max(1, math.ceil(work_s / self.target_backlog_s))

    def __call__(self, ctx: Any) -> tuple[int, dict[str, Any]]:
        desired = self.desired_replicas(ctx.aggregated_metrics or {}, float(ctx.total_num_requests or 0))
        bounded = min(max(desired, ctx.capacity_adjusted_min_replicas), ctx.capacity_adjusted_max_replicas)
        return bounded, {}


# --------------------------------------------------------------------------- ASGI wrappers


class ReplicaHeaders:
    """Inside a replica: adds ``X-Replica-Id`` to every HTTP response of the wrapped app.

    Ray's proxy adds its own ``X-Request-ID`` header (the request's id, which it also passes in to the
    app); the app's ``X-Request-Id`` is dropped here so the client sees one, not the value twice.
    """

    def __init__(self, app: ASGIApp, replica_id: str) -> None:
        self.app = app
        self.replica_id = replica_id.encode("latin-1")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_replica(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"x-request-id"]
                headers.append((HEADER_REPLICA_ID.lower().encode(), self.replica_id))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_replica)


class RayErrorResponses:
    """In Ray's HTTP proxy: the answers Ray makes itself keep the project's protocol.

    A response from a replica carries ``X-Replica-Id`` and passes untouched. Any other error response
    was made by Ray (back-pressure 429, no replica 503, proxy timeout 408): its plain-text body becomes
    ``{"error": ...}`` JSON and 429/503 get ``Retry-After``. A request whose replica died before
    answering (Ray sends nothing then) gets a 503 with ``Retry-After``: retryable, never a hang.
    """

    def __init__(self, app: ASGIApp, retry_after_s: int = 1) -> None:
        self.app = app
        self.retry_after = str(max(1, int(retry_after_s))).encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False
        held: Message | None = None  # a Ray error response's start, until its body is complete
        body: list[bytes] = []

        async def guarded_send(message: Message) -> None:
            nonlocal started, held
            if message["type"] == "http.response.start":
                started = True
                headers = message.get("headers", [])
                from_replica = any(k.lower() == HEADER_REPLICA_ID.lower().encode() for k, _ in headers)
                if message["status"] >= 400 and not from_replica:
                    held = message
                    return
            elif message["type"] == "http.response.body" and held is not None:
                body.append(message.get("body", b""))
                if message.get("more_body", False):
                    return
                text = b"".join(body).decode("utf-8", "replace").strip() or "the request failed in Ray Serve"
                await self._send_json(send, held["status"], text, held.get("headers", []))
                return
            await send(message)

        try:
            await self.app(scope, receive, guarded_send)
        except Exception:
            if started:
                raise
            log.exception("Ray's proxy failed before answering; answering 503")
        if not started:
            await self._send_json(
                send, 503, "the replica serving this request stopped before answering (it died or was removed); retry"
            )

    async def _send_json(self, send: Send, status: int, message: str, headers: Any = ()) -> None:
        payload = json.dumps({"error": message}).encode()
        kept = [
            (k, v)
            for k, v in headers
            if k.lower() not in (b"content-type", b"content-length", b"transfer-encoding", b"retry-after")
        ]
        retry_after = [v for k, v in headers if k.lower() == b"retry-after"]
        if status in (429, 503):
            kept.append((b"retry-after", retry_after[0] if retry_after else self.retry_after))
        kept += [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": kept})
        await send({"type": "http.response.body", "body": payload})


def proxy_middlewares() -> list[Any]:
    """The proxy callback Ray calls (``RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH``)."""
    from starlette.middleware import Middleware

    return [Middleware(RayErrorResponses)]


# --------------------------------------------------------------------------- the deployment


@serve.deployment
@serve.ingress()
class VAEReplica:
    """One replica: the project's app on this actor's GPU (or CPU)."""

    def __init__(self, settings: Mapping[str, Any] | None = None) -> None:
        self._overrides = dict(settings or {})
        self.replica_id = serve.get_replica_context().replica_id.unique_id
        self.vae_app: Any = None

    def __serve_build_asgi_app__(self) -> ASGIApp:
        from ..server.app import create_app

        settings = Settings.from_env(os.environ).replace(**self._overrides)
        self.vae_app = create_app(settings)
        return ReplicaHeaders(self.vae_app, self.replica_id)

    def record_autoscaling_stats(self) -> dict[str, float]:
        if self.vae_app is None or not getattr(self.vae_app.state, "ready", False):
            return {}
        return replica_stats(self.vae_app)


def build_app(args: Mapping[str, Any] | ScaleConfig | None = None) -> Any:
    """The Serve application (``serve run`` / ``serve deploy`` builder; ``args`` are ``ScaleConfig`` fields)."""
    config = args if isinstance(args, ScaleConfig) else ScaleConfig.from_args(args)
    deployment: Any = VAEReplica  # a serve.Deployment; the decorators hide that from type checkers
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*metrics_interval_s.*", category=DeprecationWarning)
        return deployment.options(**config.deployment_options()).bind(config.replica_settings())
