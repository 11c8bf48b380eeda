"""The typed error tree shared by the server and the client.

Every error the service answers is one of these, mapped to a response in one place
(``server/app.py``); the client raises the same classes from a response's status, so
``except Overloaded`` means the same thing on both sides of the wire::

    ServiceError                      (500, base; anything unexpected)
    ├── InvalidRequest                400  malformed shape, dtype, body length, parameter
    ├── Unauthorized                  401  missing or wrong bearer token
    ├── NotAcceptable                 406  no supported entry in ``Accept``
    ├── PayloadTooLarge               413  body, image or memory estimate over a limit
    ├── UnsupportedMediaType          415  unknown ``Content-Type``
    ├── Overloaded                    429  queue full (carries ``retry_after``)
    ├── HandlerError                  500  the handler raised (message without internals)
    ├── NotReady                      503  starting, stopping, or out of GPU memory
    └── RequestTimeout                504  took longer than ``REQUEST_TIMEOUT_S``
"""

from __future__ import annotations

__all__ = [
    "ServiceError",
    "InvalidRequest",
    "Unauthorized",
    "NotAcceptable",
    "PayloadTooLarge",
    "UnsupportedMediaType",
    "Overloaded",
    "HandlerError",
    "NotReady",
    "RequestTimeout",
    "error_for_status",
]


class ServiceError(Exception):
    """Base of the tree: an error with an HTTP status and a message a person can act on."""

    status_code: int = 500

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        request_id: str | None = None,
        retry_after: float | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if status_code is not None:
            self.status_code = status_code
        self.request_id = request_id
        self.retry_after = retry_after
        self.headers = dict(headers or {})

    def __str__(self) -> str:
        suffix = f" (request id {self.request_id})" if self.request_id else ""
        return f"{self.status_code}: {self.message}{suffix}"


class InvalidRequest(ServiceError, ValueError):
    status_code = 400


class Unauthorized(ServiceError):
    status_code = 401


class NotAcceptable(ServiceError):
    status_code = 406


class PayloadTooLarge(ServiceError):
    status_code = 413


class UnsupportedMediaType(ServiceError):
    status_code = 415


class Overloaded(ServiceError):
    status_code = 429


class HandlerError(ServiceError):
    status_code = 500


class NotReady(ServiceError):
    status_code = 503


class RequestTimeout(ServiceError):
    status_code = 504


_BY_STATUS: dict[int, type[ServiceError]] = {
    cls.status_code: cls
    for cls in (
        InvalidRequest,
        Unauthorized,
        NotAcceptable,
        PayloadTooLarge,
        UnsupportedMediaType,
        Overloaded,
        HandlerError,
        NotReady,
        RequestTimeout,
    )
}


def error_for_status(
    status_code: int,
    message: str,
    *,
    request_id: str | None = None,
    retry_after: float | None = None,
) -> ServiceError:
    """The typed error for an HTTP status (the base class, keeping the status, for any other)."""
    cls = _BY_STATUS.get(status_code, ServiceError)
    return cls(message, status_code=status_code, request_id=request_id, retry_after=retry_after)
