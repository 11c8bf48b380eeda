"""Every knob of the server, read once from the environment into a frozen object.

Names follow the Inference Endpoints toolkit where it has one (``HF_MODEL_DIR``, ``PORT``, ...).
Nothing reads the environment at import time: ``Settings.from_env(os.environ)`` is called by the
CLI (or a test, with a plain dict) and the result is passed down.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["Settings", "DEFAULT_MODEL_DIR"]

DEFAULT_MODEL_DIR = "/opt/huggingface/model"
MiB = 1024 * 1024


def _int(env: Mapping[str, str], key: str, default: int) -> int:
    raw = env.get(key)
    if raw is None or raw.strip() == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{key} must be an integer, got {raw!r}") from None


def _float(env: Mapping[str, str], key: str, default: float | None) -> float | None:
    raw = env.get(key)
    if raw is None or raw.strip() == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"{key} must be a number, got {raw!r}") from None


def _positive(env: Mapping[str, str], key: str, default: float) -> float:
    value = _float(env, key, default)
    assert value is not None
    if not value > 0:
        raise ValueError(f"{key} must be a number of seconds above 0, got {env.get(key)!r}")
    return value


def _str(env: Mapping[str, str], key: str, default: str | None = None) -> str | None:
    raw = env.get(key)
    return raw if raw not in (None, "") else default


@dataclass(frozen=True)
class Settings:
    """Server configuration. Build with ``from_env``; override fields with ``replace``."""

    model_dir: str = DEFAULT_MODEL_DIR
    model_id: str | None = None
    revision: str = "main"
    hub_token: str | None = None
    task: str | None = None
    default_pipeline_name: str = "handler.py"
    host: str = "0.0.0.0"
    port: int = 5000
    max_request_bytes: int = 512 * MiB
    api_token: str | None = None
    log_level: str = "info"
    # scheduling
    max_queue_size: int = 64
    request_timeout_s: float = 300.0
    max_batch_size: int | None = None  # None: 8 when the workers are GPUs, 1 on a CPU
    max_batch_delay_ms: float = 5.0
    gpu_memory_budget_gb: float | None = None  # None: free memory after warm-up minus a margin
    workers: int | None = None  # None: one per visible GPU, else one
    shutdown_grace_s: float = 30.0
    # browsers: origins allowed to call the API (CORS_ALLOW_ORIGINS, comma-separated; "*" for any). Empty: off
    cors_allow_origins: tuple[str, ...] = ()

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        env = environ
        return cls(
            model_dir=_str(env, "HF_MODEL_DIR", DEFAULT_MODEL_DIR) or DEFAULT_MODEL_DIR,
            model_id=_str(env, "HF_MODEL_ID"),
            revision=_str(env, "HF_REVISION", "main") or "main",
            hub_token=_str(env, "HF_HUB_TOKEN") or _str(env, "HF_TOKEN"),
            task=_str(env, "HF_TASK"),
            default_pipeline_name=_str(env, "HF_DEFAULT_PIPELINE_NAME", "handler.py") or "handler.py",
            host=_str(env, "HOST", "0.0.0.0") or "0.0.0.0",
            port=_int(env, "PORT", 5000),
            max_request_bytes=_int(env, "MAX_REQUEST_BYTES", 512 * MiB),
            api_token=_str(env, "API_TOKEN"),
            log_level=(_str(env, "LOG_LEVEL", "info") or "info").lower(),
            max_queue_size=_int(env, "MAX_QUEUE_SIZE", 64),
            request_timeout_s=_positive(env, "REQUEST_TIMEOUT_S", 300.0),
            max_batch_size=max(1, _int(env, "MAX_BATCH_SIZE", 0)) if env.get("MAX_BATCH_SIZE") else None,
            max_batch_delay_ms=max(0.0, _float(env, "MAX_BATCH_DELAY_MS", 5.0) or 0.0),
            gpu_memory_budget_gb=_float(env, "GPU_MEMORY_BUDGET_GB", None),
            workers=_int(env, "WORKERS", 0) or None,
            shutdown_grace_s=_float(env, "SHUTDOWN_GRACE_S", 30.0) or 30.0,
            cors_allow_origins=tuple(
                o.strip() for o in (_str(env, "CORS_ALLOW_ORIGINS") or "").split(",") if o.strip()
            ),
        )

    def replace(self, **changes: object) -> Settings:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]
