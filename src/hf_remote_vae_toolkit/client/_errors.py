"""Errors that only the client can raise: no answer came back at all.

Everything the server answers arrives as one of the shared classes of ``errors.py``
(``Overloaded``, ``NotReady``, ``InvalidRequest``, ...), built from the response status. The two
classes here cover failures before a response exists. All of them derive from
``errors.ServiceError``, so ``except ServiceError`` catches every failure of a remote call::

    ServiceError                   (errors.py)
    ├── ... one class per status   (errors.py; InvalidRequest is also a ValueError)
    ├── RequestTimeout             504 from the server
    │   └── ClientTimeout          no answer within the client's read timeout (also a TimeoutError)
    └── ClientConnectionError      could not connect, or the connection broke (also a ConnectionError)
"""

from __future__ import annotations

from ..errors import RequestTimeout, ServiceError

__all__ = ["ClientTimeout", "ClientConnectionError"]


class _NoResponse:
    """Mixin: these errors have no HTTP status; ``status_code`` is 0 and not shown."""

    status_code = 0
    message: str
    request_id: str | None

    def __str__(self) -> str:
        suffix = f" (request id {self.request_id})" if self.request_id else ""
        return f"{self.message}{suffix}"


class ClientTimeout(_NoResponse, RequestTimeout, TimeoutError):
    """The server did not answer within the client's timeout (the request may still be running there)."""

    status_code = 0


class ClientConnectionError(_NoResponse, ServiceError, ConnectionError):
    """The connection could not be made or broke before a full response arrived."""

    status_code = 0
