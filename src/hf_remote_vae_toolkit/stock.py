"""Our handlers on the unmodified stock Inference Endpoints container.

The stock container runs ``huggingface-inference-toolkit``: it imports ``handler.py``, builds
``EndpointHandler(path)`` and answers ``POST /`` itself, reading only JSON, image and audio bodies and
writing JSON or images. A VAE handler built there (``VaeHandler``'s metaclass calls :func:`attach` once the
handler is fully built) takes over the toolkit's routes in-process: from then on ``POST /`` and ``/predict``
are answered by this project's own request path (the same code as ``hf-remote-vae serve``: tensor bodies,
content negotiation, the scheduler, our errors), so diffusers' ``remote_decode``/``remote_encode`` get the same
answers as from our server, and ``GET /health`` and ``/metrics`` report our workers and queue.

Nothing happens outside that toolkit (the module it is detected by is not loaded), and
``HF_REMOTE_VAE_ATTACH=0`` turns it off there too. What the repo must carry for this, with no network and no
``pip install`` at start-up, is written by ``hf-remote-vae init-repo`` (``_vendor/``: this package and the
pure-Python ``prometheus_client``); MP4 uses the ``ffmpeg`` program when PyAV is missing.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
from typing import Any

__all__ = ["STOCK_APP_MODULE", "attach", "loaded_by_stock_toolkit"]

log = logging.getLogger("hf_remote_vae_toolkit")

#: The stock toolkit's server module; it is imported before it builds the handler.
STOCK_APP_MODULE = "huggingface_inference_toolkit.webservice_starlette"
#: The toolkit's routes we answer: POST / and /predict, and GET /, /health and /metrics, so health reflects our
#: workers and the autoscaling gauges (inf_queue_size) count our queue, not the toolkit's unused limiter.
_PATHS = ("/", "/predict", "/health", "/metrics")


def loaded_by_stock_toolkit() -> bool:
    """True inside the stock toolkit's server process (unless ``HF_REMOTE_VAE_ATTACH=0``)."""
    return STOCK_APP_MODULE in sys.modules and os.environ.get("HF_REMOTE_VAE_ATTACH", "1") != "0"


def attach(handler: Any) -> bool:
    """Serve the stock toolkit's ``POST /`` and ``/predict`` with this project's request path around
    ``handler`` (already built). Returns False, doing nothing, outside the stock toolkit."""
    if not loaded_by_stock_toolkit():
        return False
    stock_app = getattr(sys.modules[STOCK_APP_MODULE], "app", None)
    routes = getattr(getattr(stock_app, "router", None), "routes", None)
    if routes is None:
        log.warning("%s has no Starlette app to attach to; serving with its own request parsing", STOCK_APP_MODULE)
        return False
    from .server.app import create_app, start_serving
    from .settings import Settings

    settings = Settings.from_env(os.environ)
    app = create_app(settings, handler=handler)
    scheduler = start_serving(app, settings, handler)  # warm-up and the scheduler, before the toolkit opens its port
    on_shutdown = getattr(getattr(stock_app, "router", None), "on_shutdown", None)
    if isinstance(on_shutdown, list):  # SIGTERM: what is still queued gets a retryable 503, the workers stop
        on_shutdown.append(functools.partial(scheduler.stop, settings.shutdown_grace_s))
    taken = 0
    for route in routes:
        if getattr(route, "path", None) in _PATHS:
            route.app = app  # Starlette's Route.handle calls route.app(scope, receive, send)
            taken += 1
    log.info("hf-remote-vae-toolkit serves %s on the stock toolkit (%d routes)", ", ".join(_PATHS), taken)
    return taken > 0
