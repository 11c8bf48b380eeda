"""Client for remote-VAE endpoints: diffusers-compatible calls, many-at-once, a pipeline VAE, a CLI.

``remote_decode`` / ``remote_encode`` take diffusers' arguments and return diffusers' results, plus
keyword-only ``timeout``, ``retries``, ``token`` and ``session``. Every failure is a
``ServiceError`` subclass (see ``_errors.py`` for the tree) carrying ``status_code``, ``message``
and ``request_id``.

Importing this package needs only requests, Pillow, numpy and tqdm (the light client install:
``pip install hf-remote-vae-toolkit``): torch is used when the latents are torch tensors, and
``RemoteVAE`` (which needs torch and diffusers) is imported on first use.
"""

from __future__ import annotations

from typing import Any

from ..errors import (
    HandlerError,
    InvalidRequest,
    NotAcceptable,
    NotReady,
    Overloaded,
    PayloadTooLarge,
    RequestTimeout,
    ServiceError,
    Unauthorized,
    UnsupportedMediaType,
)
from ._decode import remote_decode
from ._encode import remote_encode
from ._errors import ClientConnectionError, ClientTimeout
from ._http import DEFAULT_TIMEOUT, Retry, new_session
from ._many import DecodeManyError, adecode_many, decode_many
from .streaming import StreamTruncated, iter_decode_frames, stream_decode_to_file

__all__ = [
    "remote_decode",
    "remote_encode",
    "decode_many",
    "adecode_many",
    "stream_decode_to_file",
    "iter_decode_frames",
    "StreamTruncated",
    "RemoteVAE",
    "Retry",
    "DEFAULT_TIMEOUT",
    "new_session",
    "DecodeManyError",
    "ServiceError",
    "ClientTimeout",
    "ClientConnectionError",
    "InvalidRequest",
    "Unauthorized",
    "NotAcceptable",
    "PayloadTooLarge",
    "UnsupportedMediaType",
    "Overloaded",
    "HandlerError",
    "NotReady",
    "RequestTimeout",
]


def __getattr__(name: str) -> Any:
    if name == "RemoteVAE":  # needs torch and diffusers, which the light client install does not have
        from ._pipeline import RemoteVAE

        return RemoteVAE
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
