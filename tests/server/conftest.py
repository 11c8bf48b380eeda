from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from hf_remote_vae_toolkit.testing import running_server

TOY = Path(__file__).parent / "toy_handlers"


@pytest.fixture(scope="module")
def echo_url() -> Iterator[str]:
    with running_server(TOY / "echo", max_request_bytes=64 * 1024) as url:
        yield url


@pytest.fixture(scope="module")
def tensor_url() -> Iterator[str]:
    with running_server(TOY / "tensor") as url:
        yield url
