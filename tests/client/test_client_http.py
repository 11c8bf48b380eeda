"""Timeouts, retries, tokens and typed errors, against the real server on loopback."""

from __future__ import annotations

import time

import pytest
import requests
import torch

from hf_remote_vae_toolkit.client import (
    ClientConnectionError,
    ClientTimeout,
    InvalidRequest,
    NotReady,
    Retry,
    ServiceError,
    Unauthorized,
    remote_decode,
)
from hf_remote_vae_toolkit.client._http import resolve_token
from hf_remote_vae_toolkit.errors import HandlerError, Overloaded, RequestTimeout
from hf_remote_vae_toolkit.testing import free_port, running_server

FAST = Retry(total=3, backoff_base=0.01)
Z = torch.arange(16, dtype=torch.float32).reshape(1, 1, 4, 4)


def decode_pt(url: str, **kwargs):
    return remote_decode(url, Z, output_type="pt", return_type="pt", do_scaling=False, **kwargs)


def test_503_twice_then_200_is_retried_in_three_attempts(toys):
    handler = toys.Flaky(failures=2)
    with running_server(handler=handler) as url:
        out = decode_pt(url, retries=FAST)
    assert torch.equal(out, Z * 2)
    assert handler.attempts == 3


def test_retries_exhausted_raise_the_typed_error_with_message_and_request_id(toys):
    handler = toys.Flaky(failures=5)
    with running_server(handler=handler) as url:
        with pytest.raises(NotReady) as info:
            decode_pt(url, retries=Retry(total=1, backoff_base=0.01))
    assert handler.attempts == 2
    err = info.value
    assert err.status_code == 503
    assert "warming up (attempt 2)" in err.message
    assert err.request_id and err.request_id in str(err)


def test_client_errors_are_not_retried():
    class Refuses:
        attempts = 0

        def __call__(self, data):
            Refuses.attempts += 1
            raise InvalidRequest("latents must have 4 channels")

    with running_server(handler=Refuses()) as url:
        with pytest.raises(InvalidRequest, match="4 channels") as info:
            decode_pt(url, retries=FAST)
    assert Refuses.attempts == 1
    assert isinstance(info.value, ValueError) and info.value.status_code == 400


def test_handler_crash_is_a_500_handler_error_without_retry():
    attempts = []

    class Crash:  # a handler with the explicit parse step: a crash in its GPU step is the server's fault
        def parse(self, data, request):
            return data

        def call_batch(self, jobs):
            attempts.append(1)
            raise RuntimeError("secret internals")

    with running_server(handler=Crash()) as url:
        with pytest.raises(HandlerError) as info:
            decode_pt(url, retries=FAST)
    assert info.value.status_code == 500 and "secret" not in info.value.message
    assert len(attempts) == 1


def test_429_honours_retry_after():
    class Busy:
        attempts = 0

        def __call__(self, data):
            Busy.attempts += 1
            if Busy.attempts == 1:
                raise Overloaded("queue full", retry_after=0.2)
            return data["inputs"]

    with running_server(handler=Busy()) as url:
        started = time.monotonic()
        out = decode_pt(url, retries=Retry(total=2, backoff_base=0.0))
        elapsed = time.monotonic() - started
    assert torch.equal(out, Z) and Busy.attempts == 2
    # backoff_base=0 would retry at once; the wait comes from the server's Retry-After (whole seconds)
    assert elapsed >= 0.9


def test_a_handler_that_sleeps_past_the_timeout_gives_a_typed_timeout_quickly(toys):
    with running_server(handler=toys.Sleepy(3.0)) as url:
        started = time.monotonic()
        with pytest.raises(ClientTimeout) as info:
            decode_pt(url, timeout=0.5, retries=FAST)
        elapsed = time.monotonic() - started
    assert elapsed < 2.0  # one attempt: a read timeout is not retried
    err = info.value
    assert isinstance(err, TimeoutError) and isinstance(err, RequestTimeout) and isinstance(err, ServiceError)
    assert err.request_id and "0.5 s" in str(err)


def test_server_side_timeout_is_a_504_request_timeout(toys):
    with running_server(handler=toys.Sleepy(1.5), request_timeout_s=0.3) as url:
        with pytest.raises(RequestTimeout) as info:
            decode_pt(url, retries=0)
    assert info.value.status_code == 504 and not isinstance(info.value, ClientTimeout)


def test_connection_refused_is_retried_then_a_typed_connection_error():
    url = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    with pytest.raises(ClientConnectionError) as info:
        decode_pt(url, retries=Retry(total=2, backoff_base=0.01))
    assert time.monotonic() - started < 5
    assert isinstance(info.value, ConnectionError) and isinstance(info.value, ServiceError)


def test_bad_arguments_fail_before_any_request():
    with pytest.raises(ValueError, match="retries"):
        decode_pt("http://127.0.0.1:9", retries=-1)
    with pytest.raises(ValueError, match="positive"):
        decode_pt("http://127.0.0.1:9", timeout=0)
    with pytest.raises(ValueError, match="invalid endpoint"):
        decode_pt("not a url", retries=0)


def test_token_is_sent_as_bearer(monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", "/nonexistent-hf-home")  # no stored login either
    with running_server(handler=lambda data: data["inputs"], api_token="s3cret") as url:
        with pytest.raises(Unauthorized) as info:
            decode_pt(url, retries=FAST)
        assert info.value.status_code == 401
        assert torch.equal(decode_pt(url, token="s3cret"), Z)
        # default: the Hugging Face token from the environment (loopback is trusted)
        monkeypatch.setenv("HF_TOKEN", "s3cret")
        assert torch.equal(decode_pt(url), Z)
        with pytest.raises(Unauthorized):
            decode_pt(url, token=False)


def test_default_token_goes_only_to_hugging_face_hosts_and_loopback(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_abc")
    assert resolve_token("https://x.us-east-1.aws.endpoints.huggingface.cloud", None) == "hf_abc"
    assert resolve_token("http://localhost:5000", None) == "hf_abc"
    assert resolve_token("https://vae.example.com", None) is None
    assert resolve_token("http://x.endpoints.huggingface.cloud", None) is None  # never in clear text
    assert resolve_token("https://vae.example.com", True) == "hf_abc"
    assert resolve_token("https://vae.example.com", "mine") == "mine"
    assert resolve_token("https://x.hf.space", False) is None


def test_injected_session_is_used_for_every_request(toys):
    class CountingSession(requests.Session):
        posts = 0

        def post(self, *args, **kwargs):
            CountingSession.posts += 1
            return super().post(*args, **kwargs)

    with running_server(handler=toys.Flaky(failures=1)) as url, CountingSession() as session:
        decode_pt(url, session=session, retries=FAST)
        decode_pt(url, session=session, retries=FAST)
    assert CountingSession.posts == 3
