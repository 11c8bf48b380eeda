"""One POST to a remote-VAE endpoint, done carefully: timeout, retries, token, typed errors.

The diffusers client calls ``requests.post`` with no timeout (a dead server hangs it forever),
never retries (a scaled-to-zero endpoint answering 503 while it wakes fails the call), and turns
every error into a bare ``RuntimeError``. ``post`` below fixes those three things and nothing
else: the request bytes and headers are exactly what the caller built.
"""

from __future__ import annotations

import email.utils
import ipaddress
import os
import random
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests

from ..errors import ServiceError, error_for_status
from ..protocol import HEADER_REQUEST_ID, encode_query
from ._errors import ClientConnectionError, ClientTimeout

__all__ = [
    "DEFAULT_TIMEOUT",
    "Retry",
    "RETRYABLE_STATUSES",
    "TimeoutArg",
    "RetriesArg",
    "TokenArg",
    "post",
    "resolve_token",
    "new_session",
]

#: (connect, read) seconds. Connecting to a live host takes milliseconds, so 10 s only waits out
#: a slow DNS or a cold proxy. The read timeout sits just above the server's own default
#: ``REQUEST_TIMEOUT_S`` (300 s): a slow decode is answered with a 504 the client can read
#: rather than a client-side cut that leaves the work running on the GPU.
DEFAULT_TIMEOUT: tuple[float, float] = (10.0, 310.0)

#: Statuses that mean "try again later": queue full, a proxy that lost the backend, not ready
#: (an endpoint waking from zero), and the server's own timeout.
RETRYABLE_STATUSES = frozenset({429, 502, 503, 504})

# Hosts the Hugging Face token is sent to when the caller did not pass one (see resolve_token).
_HF_HOST_SUFFIXES = (".huggingface.cloud", ".hf.space", ".huggingface.co", ".hf.co")
_HF_HOSTS = ("huggingface.co", "hf.co")


@dataclass(frozen=True)
class Retry:
    """Retry policy: ``total`` retries after the first attempt, exponential backoff with full jitter.

    The wait before retry ``n`` (0-based) is uniform in ``[0, min(backoff_max, backoff_base * 2**n)]``,
    so many clients that failed together do not come back together. A ``Retry-After`` header
    (seconds or an HTTP date) replaces the computed wait, capped at ``retry_after_max``.
    """

    total: int = 3
    backoff_base: float = 0.5
    backoff_max: float = 20.0
    retry_after_max: float = 120.0
    statuses: frozenset[int] = RETRYABLE_STATUSES

    def __post_init__(self) -> None:
        if self.total < 0:
            raise ValueError(f"retries must be >= 0, got {self.total}")

    def wait(self, attempt: int, retry_after: float | None) -> float:
        """Seconds to sleep before retry number ``attempt`` (0-based)."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.retry_after_max)
        return random.uniform(0.0, min(self.backoff_max, self.backoff_base * (2**attempt)))


TimeoutArg = float | tuple[float, float] | None
RetriesArg = int | Retry
TokenArg = str | bool | None


def _as_retry(retries: RetriesArg) -> Retry:
    if isinstance(retries, Retry):
        return retries
    if isinstance(retries, bool) or not isinstance(retries, int):
        raise TypeError(f"retries must be an int or a Retry, got {retries!r}")
    return Retry(total=retries)


def _as_timeout(timeout: TimeoutArg) -> tuple[float, float]:
    # ``None`` means "the default", never "wait forever": a call without a timeout is the bug we fix.
    if timeout is None:
        return DEFAULT_TIMEOUT
    if isinstance(timeout, (int, float)) and not isinstance(timeout, bool):
        value = float(timeout)
        timeout = (value, value)
    if not (isinstance(timeout, tuple) and len(timeout) == 2):
        raise TypeError(f"timeout must be seconds or a (connect, read) pair, got {timeout!r}")
    connect, read = float(timeout[0]), float(timeout[1])
    if connect <= 0 or read <= 0:
        raise ValueError(f"timeout must be positive, got {timeout!r}")
    return (connect, read)


def _is_hf_or_loopback(url: str) -> bool:
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if parts.scheme == "https" and (host in _HF_HOSTS or host.endswith(_HF_HOST_SUFFIXES)):
        return True
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def resolve_token(endpoint: str, token: TokenArg) -> str | None:
    """The bearer token to send.

    - a string: sent as given, to any endpoint;
    - ``False``: nothing is sent;
    - ``None`` / ``True`` (default): the Hugging Face token (``HF_TOKEN`` or ``huggingface-cli login``,
      via ``huggingface_hub.get_token``), but only to Hugging Face hosts over HTTPS (Inference
      Endpoints, Spaces) and to loopback. A personal token is a credential for the whole Hub
      account; sending it unasked to any third-party URL would hand it to whoever runs that server.
      ``True`` sends it to any host (and fails when there is none).
    """
    if isinstance(token, str):
        return token
    if token is False:
        return None
    found = _hf_token()
    if token is True:
        if not found:
            raise ValueError("token=True but no Hugging Face token was found (set HF_TOKEN or log in)")
        return found
    return found if found and _is_hf_or_loopback(endpoint) else None


def _hf_token() -> str | None:
    """The Hugging Face token: ``huggingface_hub.get_token()``, or where it looks when it is not
    installed (the light client install): ``HF_TOKEN``, then the file ``hf auth login`` writes."""
    try:
        from huggingface_hub import get_token
    except ImportError:
        pass
    else:
        return get_token()
    if os.environ.get("HF_TOKEN", "").strip():
        return os.environ["HF_TOKEN"].strip()
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "huggingface"
    )
    path = os.environ.get("HF_TOKEN_PATH") or os.path.join(home, "token")
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().strip() or None
    except OSError:
        return None


def new_session(pool_size: int = 10) -> requests.Session:
    """A ``requests.Session`` whose connection pool holds ``pool_size`` connections per host.

    One session shared by threads reuses connections (no TCP/TLS handshake per request); the pool
    must be at least as large as the number of threads, or urllib3 discards the extra connections.
    """
    session = requests.Session()
    adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=max(1, pool_size))
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def _retry_after(headers: Mapping[str, str]) -> float | None:
    raw = headers.get("Retry-After")
    if not raw:
        return None
    raw = raw.strip()
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _error_message(response: requests.Response) -> str:
    # Our server and the reference service answer {"error": "..."}; a proxy in front of them may
    # answer HTML or nothing, which is still worth showing (shortened).
    try:
        body = response.json()
    except ValueError:
        text = response.text.strip()
        return text[:500] if text else (response.reason or f"HTTP {response.status_code}")
    if isinstance(body, dict) and "error" in body:
        return str(body["error"])
    return str(body)[:500]


def _error_from_response(response: requests.Response, request_id: str) -> ServiceError:
    return error_for_status(
        response.status_code,
        _error_message(response),
        request_id=response.headers.get(HEADER_REQUEST_ID) or request_id,
        retry_after=_retry_after(response.headers),
    )


def post(
    endpoint: str,
    *,
    data: bytes,
    params: Mapping[str, Any] | Sequence[tuple[str, str]],
    headers: Mapping[str, str],
    timeout: TimeoutArg = None,
    retries: RetriesArg = 3,
    token: TokenArg = None,
    session: requests.Session | None = None,
    stream: bool = False,
) -> requests.Response:
    """POST ``data`` with retries; return the 2xx response or raise a ``ServiceError`` subclass.

    ``stream``: return the 2xx response unread (its body is the caller's to iterate and close).

    Retried: connection failures (including connect timeouts) and ``Retry.statuses``. Not retried:
    a read timeout (the server may still be working; sending it again doubles the GPU work) and
    every other status (sending the same bytes again would fail the same way). Each call sends one
    ``X-Request-Id`` for all its attempts so the server's log lines can be matched to it.
    """
    policy = _as_retry(retries)
    connect_read = _as_timeout(timeout)
    query = encode_query(params) if isinstance(params, Mapping) else list(params)
    request_id = uuid.uuid4().hex
    send_headers = {**headers, HEADER_REQUEST_ID: request_id}
    bearer = resolve_token(endpoint, token)
    if bearer:
        send_headers["Authorization"] = f"Bearer {bearer}"
    http = session if session is not None else requests.Session()
    owned = session is None
    try:
        attempt = 0
        while True:
            error: ServiceError
            try:
                response = http.post(
                    endpoint, data=data, params=query, headers=send_headers, timeout=connect_read, stream=stream
                )
            except (
                requests.exceptions.MissingSchema,
                requests.exceptions.InvalidSchema,
                requests.exceptions.InvalidURL,
            ) as exc:
                raise ValueError(f"invalid endpoint URL {endpoint!r}: {exc}") from None
            except requests.ConnectionError as exc:
                # ConnectTimeout is a ConnectionError too: nothing reached the server, safe to resend.
                # ReadTimeout is not (it derives from Timeout only) and is handled below.
                error = ClientConnectionError(f"could not reach {endpoint}: {exc}", request_id=request_id)
            except requests.Timeout as exc:
                raise ClientTimeout(
                    f"no answer from {endpoint} within {connect_read[1]:g} s (read timeout): {exc}",
                    request_id=request_id,
                ) from None
            except requests.RequestException as exc:
                # The connection broke mid-response: the server may have done the work, so no resend.
                raise ClientConnectionError(f"broken response from {endpoint}: {exc}", request_id=request_id) from None
            else:
                if response.ok:
                    owned = owned and not stream  # a streamed body still needs its connection
                    return response
                error = _error_from_response(response, request_id)
                response.close()
                if response.status_code not in policy.statuses:
                    raise error
            if attempt >= policy.total:
                raise error
            time.sleep(policy.wait(attempt, error.retry_after))
            attempt += 1
    finally:
        if owned:
            http.close()
