"""A raw HTTP/1.1 client on a kept-alive socket: sends exactly the bytes given, reads one response.

The stress suite needs what ``requests`` will not do: malformed request heads, wrong ``Content-Length``,
bodies that stop half way, many requests on one connection with the answer to each checked against the
request it belongs to (``X-Request-Id``). Responses are framed by ``Content-Length``, chunked transfer
encoding, or the connection closing.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field

__all__ = ["Response", "Connection", "build_request", "NoAnswer"]


class NoAnswer(Exception):
    """The server closed the connection, or said nothing in time, before a whole response."""


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes
    raw_head: bytes = b""
    closes: bool = False  # the server said Connection: close (or HTTP/1.0)
    elapsed_s: float = 0.0
    header_list: list[tuple[str, str]] = field(default_factory=list)


def build_request(
    method: str,
    target: str,
    headers: list[tuple[str, str]] | None = None,
    body: bytes = b"",
    *,
    content_length: bool = True,
    version: str = "HTTP/1.1",
) -> bytes:
    """Request bytes; ``Content-Length`` is added for the body unless the headers have one or a
    ``Transfer-Encoding`` (or ``content_length=False``)."""
    headers = list(headers or [])
    names = {k.lower() for k, _ in headers}
    if "host" not in names:
        headers.insert(0, ("Host", "127.0.0.1"))
    if content_length and "content-length" not in names and "transfer-encoding" not in names:
        if body or method not in ("GET", "HEAD"):
            headers.append(("Content-Length", str(len(body))))
    head = f"{method} {target} {version}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers) + "\r\n"
    return head.encode("latin-1") + body


class Connection:
    """One TCP connection to ``host:port``; reconnects on demand (``ensure``)."""

    def __init__(self, host: str, port: int, timeout: float = 30.0) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self.sock: socket.socket | None = None
        self.buffer = b""
        self.connects = 0

    def ensure(self) -> None:
        if self.sock is None:
            self.sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.buffer = b""
            self.connects += 1

    def close(self) -> None:
        if self.sock is not None:
            try:
                self.sock.close()
            finally:
                self.sock = None
                self.buffer = b""

    def send(self, data: bytes) -> None:
        self.ensure()
        assert self.sock is not None
        try:
            self.sock.sendall(data)
        except OSError:
            # the server may have answered and closed early (a 413 before the whole body): read that answer
            pass

    def _fill(self, deadline: float) -> bool:
        assert self.sock is not None
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise NoAnswer("timed out")
        self.sock.settimeout(remaining)
        try:
            chunk = self.sock.recv(1 << 20)
        except TimeoutError:
            raise NoAnswer("timed out") from None
        except OSError as exc:  # connection reset
            if self.buffer:
                return False
            raise NoAnswer(f"connection error: {exc}") from None
        if not chunk:
            return False
        self.buffer += chunk
        return True

    def read_response(self, timeout: float | None = None, method: str = "POST") -> Response:
        """Read one whole response (after any 1xx); raises ``NoAnswer`` when none comes."""
        self.ensure()
        started = time.monotonic()
        deadline = started + (timeout or self.timeout)
        while True:
            while b"\r\n\r\n" not in self.buffer:
                if not self._fill(deadline):
                    self.close()
                    raise NoAnswer("connection closed before a response head")
            head, _, rest = self.buffer.partition(b"\r\n\r\n")
            self.buffer = rest
            lines = head.split(b"\r\n")
            parts = lines[0].split(b" ", 2)
            try:
                status = int(parts[1])
            except (IndexError, ValueError):
                self.close()
                raise NoAnswer(f"malformed status line {lines[0][:80]!r}") from None
            if 100 <= status < 200:
                continue
            break
        header_list: list[tuple[str, str]] = []
        for line in lines[1:]:
            name, _, value = line.decode("latin-1").partition(":")
            header_list.append((name.strip().lower(), value.strip()))
        headers = dict(header_list)
        closes = headers.get("connection", "").lower() == "close" or parts[0] == b"HTTP/1.0"
        if method == "HEAD" or status in (204, 304):
            body = b""
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            body = self._read_chunked(deadline)
        elif "content-length" in headers:
            n = int(headers["content-length"])
            while len(self.buffer) < n:
                if not self._fill(deadline):
                    self.close()
                    raise NoAnswer(f"connection closed after {len(self.buffer)} of {n} body bytes")
            body, self.buffer = self.buffer[:n], self.buffer[n:]
        else:
            while self._fill(deadline):
                pass
            body, self.buffer = self.buffer, b""
            closes = True
        response = Response(status, headers, body, head, closes, time.monotonic() - started, header_list)
        if closes:
            self.close()
        return response

    def _read_chunked(self, deadline: float) -> bytes:
        out = bytearray()
        while True:
            while b"\r\n" not in self.buffer:
                if not self._fill(deadline):
                    self.close()
                    raise NoAnswer("connection closed inside a chunked body")
            size_line, _, self.buffer = self.buffer.partition(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            while len(self.buffer) < size + 2:
                if not self._fill(deadline):
                    self.close()
                    raise NoAnswer("connection closed inside a chunk")
            out += self.buffer[:size]
            self.buffer = self.buffer[size + 2 :]
            if size == 0:
                return bytes(out)

    def exchange(self, data: bytes, timeout: float | None = None, method: str = "POST") -> Response:
        self.send(data)
        return self.read_response(timeout, method)
