"""``VaeHandler``: what every VAE handler shares (image decode, image encode, video decode).

It keeps the stock contract (``EndpointHandler(path)``, ``handler(data)``) and adds the explicit steps of
``hf_remote_vae_toolkit.contract``: ``parse`` (checks, no GPU work), ``batch_key``, ``estimate_memory``,
``call_batch``, ``setup`` and ``warmup``. A subclass implements ``parse_job`` and ``call_batch`` and, where
it batches or uses memory, ``batch_key`` and ``estimate_memory``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Hashable, Mapping
from typing import Any, ClassVar

import torch

from .. import stock
from ..contract import RequestInfo, WorkerInfo, request_parameters
from ..errors import InvalidRequest
from .config import VaeConfig
from .families import Family
from .loading import LoadedVAE, load_vae

__all__ = ["VaeHandler"]


class _AttachedOnceBuilt(type):
    """Once a handler is fully built (every subclass ``__init__`` done), and only on the stock Inference
    Endpoints container, it takes over the container's request parsing (``stock.py``)."""

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        handler = super().__call__(*args, **kwargs)
        stock.attach(handler)
        return handler


class VaeHandler(metaclass=_AttachedOnceBuilt):
    """Base of the VAE handlers; a subclass sets ``family`` (a registered name such as ``"sd-v1"``, or a
    ``Family``) and says whether it serves video (``video``)."""

    family: ClassVar[str | Family] = ""
    video: ClassVar[bool] = False

    def __init__(
        self,
        path: str = "",
        *,
        device: str | torch.device | None = None,
        config: VaeConfig | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        if not self.family:
            raise TypeError(f"{type(self).__name__} must set the class attribute `family` (e.g. 'sd-v1')")
        #: the knobs; ``environ`` (a mapping) stands in for the process environment, for tests
        self.config = config or VaeConfig.from_env(environ)
        self.loaded: LoadedVAE = load_vae(path or ".", self.family, device=device, dtype=self.config.dtype)
        if self.loaded.family.video != self.video:
            kind = "a video" if self.loaded.family.video else "an image"
            raise TypeError(f"{self.loaded.family.name} is {kind} VAE; {type(self).__name__} cannot serve it")
        #: bytes of activations one call may use; ``setup`` replaces it with the server's budget. None: no limit.
        self.memory_budget_bytes: int | None = self.config.memory_budget_bytes
        self.configure()

    def configure(self) -> None:
        """Set-up a subclass adds once the VAE is loaded (before the handler may be served)."""

    @property
    def device(self) -> torch.device:
        """Where the VAE runs (the server gives this handler's worker that GPU)."""
        return self.loaded.device

    @property
    def itemsize(self) -> int:
        return self.loaded.dtype.itemsize

    # ------------------------------------------------------------------ the contract's steps

    def setup(self, worker: WorkerInfo) -> None:
        """The server's memory budget for this worker (when it knows one) replaces the configured one."""
        if worker.memory_budget_bytes is not None:
            self.memory_budget_bytes = worker.memory_budget_bytes

    def parse(self, data: dict[str, Any], request: RequestInfo) -> Any:
        """Check a request without touching the GPU; raises ``InvalidRequest`` (400) or ``PayloadTooLarge``."""
        try:
            params = request_parameters(data, request)
        except TypeError as exc:
            raise InvalidRequest(str(exc)) from None
        return self.parse_job(data.get("inputs"), params, request.accept)

    def parse_job(self, inputs: Any, params: Mapping[str, Any], accept: str | None) -> Any:
        raise NotImplementedError

    def batch_key(self, job: Any) -> Hashable | None:
        return None

    def estimate_memory(self, job: Any) -> int:
        return 0

    def call_batch(self, jobs: list[Any]) -> list[Any]:
        raise NotImplementedError

    def __call__(self, data: dict[str, Any]) -> Any:
        """The stock contract: one request, its ``parameters`` typed values, the natural output. The whole
        result comes back at once: a video is never streamed here (nothing would read the stream)."""
        job = self.parse(data, RequestInfo(body_parameters="parameters" in data))
        if getattr(job, "stream", False):
            job = dataclasses.replace(job, stream=False)
        return self.call_batch([job])[0]

    def warmup(self) -> None:
        """One small call, so the first request pays no lazy initialisation."""
