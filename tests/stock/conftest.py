"""Fixtures for the stock-fidelity tests (issue 11).

The REAL stock toolkit (huggingface-inference-toolkit 0.5.6, the server of the stock Inference
Endpoints image) runs from its own virtualenv, ``.venv-stock`` (``make stock-venv``), as its
container starts it: ``uvicorn huggingface_inference_toolkit.webservice_starlette:app`` with
``HF_MODEL_DIR``. Our server runs in-process (``running_server``) on the SAME handler directory,
and the tests send both the same bytes and compare what comes back.

``STOCK_VENV`` points at another venv; ``REQUIRE_STOCK=1`` turns "venv missing" from a skip into
an error (for CI, where the venv is built first).
"""

from __future__ import annotations

import contextlib
import http.client
import os
import subprocess
import tempfile
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from hf_remote_vae_toolkit.testing import free_port, running_server

REPO = Path(__file__).resolve().parents[2]
HANDLERS = Path(__file__).parent / "handlers"
# absolute, not resolved: the venv's python is a symlink, and the stock servers run from a temporary directory
STOCK_VENV = Path(os.environ.get("STOCK_VENV") or REPO / ".venv-stock").absolute()
STOCK_PYTHON = STOCK_VENV / "bin" / "python"
STOCK_APP = "huggingface_inference_toolkit.webservice_starlette:app"
STOCK_MISSING = (
    f"STOCK TOOLKIT NOT INSTALLED: {STOCK_PYTHON} is missing, so the side-by-side comparison with the real "
    "huggingface-inference-toolkit 0.5.6 did NOT run. Build it with `make stock-venv` (needs ../shared/wheels)."
)

#: The handler directories every comparison uses (tests/stock/handlers/<name>).
HANDLER_NAMES = ("echo", "run_kwargs", "describe", "cases", "legacy")


def stock_available() -> bool:
    return STOCK_PYTHON.is_file()


#: Outcome of each request-matrix case that passed, by case id: "identical", "documented" or "status-only".
MATRIX_OUTCOMES = pytest.StashKey[dict[str, str]]()


@pytest.fixture
def record_matrix(request: pytest.FixtureRequest):
    """``record(case_id, outcome)``: the terminal summary counts the matrix by outcome."""
    outcomes = request.config.stash.setdefault(MATRIX_OUTCOMES, {})
    return outcomes.__setitem__


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    ran_stock_tests = any(
        "tests/stock" in str(getattr(report, "fspath", ""))
        for reports in terminalreporter.stats.values()
        for report in reports
    )
    if ran_stock_tests and not stock_available():
        terminalreporter.write_sep("!", STOCK_MISSING, red=True, bold=True)
    counts: dict[str, int] = {}
    outcomes = config.stash.get(MATRIX_OUTCOMES, {})
    for status, reports in terminalreporter.stats.items():
        if status not in ("passed", "failed", "xfailed", "xpassed", "skipped"):
            continue
        for report in reports:
            nodeid = getattr(report, "nodeid", "")
            if "test_same_as_stock[" not in nodeid or getattr(report, "when", "call") != "call":
                continue
            case = nodeid.split("[", 1)[1].rstrip("]")
            key = {"xfailed": "defect (xfail)", "failed": "FAILED", "xpassed": "XPASS (defect fixed?)"}.get(status)
            key = key or (outcomes.get(case, "passed") if status == "passed" else status)
            counts[key] = counts.get(key, 0) + 1
    if counts:
        summary = ", ".join(f"{n} {k}" for k, n in sorted(counts.items(), key=lambda kv: -kv[1]))
        terminalreporter.write_sep("-", f"stock request matrix: {summary}")


@dataclass(frozen=True)
class Reply:
    status: int
    content_type: str | None
    body: bytes
    allow: str | None = None

    def show(self) -> str:
        body = self.body if len(self.body) <= 300 else self.body[:300] + b"..."
        return f"{self.status} {self.content_type} {body!r}"


def send(
    url: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    query: str = "",
    path: str = "/",
    method: str = "POST",
) -> Reply:
    """One request with exactly these headers (http.client adds only Host, Content-Length and
    Accept-Encoding: no default Accept or Content-Type)."""
    parsed = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parsed.hostname or "127.0.0.1", parsed.port, timeout=120)
    try:
        conn.request(method, path + (f"?{query}" if query else ""), body=body, headers=headers or {})
        response = conn.getresponse()
        allow = response.getheader("allow")
        return Reply(response.status, response.getheader("content-type"), response.read(), allow)
    finally:
        conn.close()


def model_dir(name: str) -> str:
    """The HF_MODEL_DIR both servers get, spelled with a trailing slash: the stock toolkit hands that
    string to ``EndpointHandler(path)`` verbatim, which the ``path`` case checks."""
    return f"{HANDLERS / name}/"


def _wait_stock(url: str, proc: subprocess.Popen[bytes], log_path: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"the stock toolkit exited with {proc.returncode} before serving; its log:\n{Path(log_path).read_text()}"
            )
        with contextlib.suppress(OSError):
            parsed = urllib.parse.urlsplit(url)
            conn = http.client.HTTPConnection(parsed.hostname or "127.0.0.1", parsed.port, timeout=2)
            try:
                conn.request("GET", "/health")
                if conn.getresponse().status == 200:
                    return
            finally:
                conn.close()
        time.sleep(0.1)
    raise TimeoutError(
        f"the stock toolkit did not answer /health within {timeout} s; its log:\n{Path(log_path).read_text()}"
    )


@contextlib.contextmanager
def stock_servers(
    names: tuple[str, ...],
    timeout: float = 300.0,
    dirs: dict[str, str] | None = None,
    extra_env: dict[str, str] | None = None,
) -> Iterator[dict[str, str]]:
    """Start the stock toolkit once per handler directory, all at once (each import takes seconds).
    ``dirs``: name -> model directory (default: tests/stock/handlers/<name>/); ``extra_env`` for every server."""
    started: dict[str, tuple[str, subprocess.Popen[bytes], str]] = {}
    try:
        for name in names:
            port = free_port()
            with tempfile.NamedTemporaryFile(prefix=f"stock-{name}-", suffix=".log", delete=False) as log:
                env = {
                    "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                    "HOME": os.environ.get("HOME", "/tmp"),
                    "HF_MODEL_DIR": dirs[name] if dirs else model_dir(name),
                    "HF_HUB_OFFLINE": "1",
                    "OMP_NUM_THREADS": "1",
                    "PYTHONUNBUFFERED": "1",
                    **(extra_env or {}),
                }
                proc = subprocess.Popen(
                    [str(STOCK_PYTHON), "-m", "uvicorn", STOCK_APP, "--host", "127.0.0.1", "--port", str(port)],
                    env=env,
                    cwd=tempfile.gettempdir(),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            started[name] = (f"http://127.0.0.1:{port}", proc, log.name)
        for url, proc, log_path in started.values():
            _wait_stock(url, proc, log_path, timeout)
        yield {name: url for name, (url, _, _) in started.items()}
    finally:
        for _, proc, log_path in started.values():
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            with contextlib.suppress(OSError):
                os.unlink(log_path)


@dataclass
class Pair:
    """Base URLs of both servers, per handler directory."""

    stock: dict[str, str]
    ours: dict[str, str]

    def both(
        self, handler: str, body: bytes = b"", headers: dict[str, str] | None = None, query: str = "", path: str = "/"
    ) -> tuple[Reply, Reply]:
        return (
            send(self.stock[handler], body, headers, query, path),
            send(self.ours[handler], body, headers, query, path),
        )


@pytest.fixture(scope="session")
def ours_urls() -> Iterator[dict[str, str]]:
    """Our server on each handler directory (the ported stock tests use it alone: no stock venv)."""
    with contextlib.ExitStack() as stack:
        yield {name: stack.enter_context(running_server(model_dir(name))) for name in HANDLER_NAMES}


@pytest.fixture(scope="session")
def pair(ours_urls: dict[str, str]) -> Iterator[Pair]:
    if not stock_available():
        pytest.skip(STOCK_MISSING)
    with stock_servers(HANDLER_NAMES) as stock:
        yield Pair(stock, ours_urls)


@pytest.fixture(scope="session")
def post():
    return send
