"""Client for remote-VAE endpoints: diffusers-compatible calls, many-at-once, a pipeline VAE, a CLI.

``remote_decode`` / ``remote_encode`` take diffusers' arguments and return diffusers' results, plus
keyword-only ``timeout``, ``retries``, ``token`` and ``session``. Every failure is a
``ServiceError`` subclass (see ``_errors.py`` for the tree) carrying ``status_code``, ``message``
and ``request_id``.
"""

from __future__ import annotations

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
from ._pipeline import RemoteVAE

__all__ = [
    "remote_decode",
    "remote_encode",
    "decode_many",
    "adecode_many",
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
