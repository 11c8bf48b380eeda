"""Malformed requests get a 4xx JSON answer before any model work, on kept-alive connections, on both
HTTP parsers; the next request on the same connection gets its own, correct answer.

Each case here is a regression test for a defect the fuzzer found (issue 14): ``parameters`` that is not
an object, integers past Python's 4,300-digit limit, JSON nested 1,000 deep, a seed past 64 bits, an
upgrade request whose body the httptools parser never delivers, answers sent before the body was read.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from urllib.parse import urlsplit

import numpy as np
import pytest
import torch
from benchmarks.stress import fuzz
from benchmarks.stress.rawhttp import Connection, Response, build_request
from benchmarks.stress.servers import Reference

SHAPE_Q = "shape=1&shape=4&shape=8&shape=8&dtype=float32"


def _conn(url: str) -> Connection:
    parts = urlsplit(url)
    return Connection(parts.hostname or "127.0.0.1", int(parts.port or 80), timeout=30)


def _decode_ok(conn: Connection, z: torch.Tensor, ref: Reference, rid: str) -> None:
    """A valid decode on ``conn`` answers ``rid`` with the local decode of ``z``."""
    r = conn.exchange(
        build_request(
            "POST",
            f"/?{SHAPE_Q}&output_type=pt",
            [("X-Request-Id", rid), ("Content-Type", "tensor/binary"), ("Accept", "tensor/binary")],
            z.numpy().tobytes(),
        )
    )
    assert r.status == 200, r.body[:300]
    assert r.headers["x-request-id"] == rid
    got = torch.from_numpy(np.frombuffer(r.body, dtype=np.float32).copy()).reshape(1, 3, 64, 64)
    torch.testing.assert_close(got, ref.raw(hash(rid), z), atol=1e-3, rtol=0)


def _assert_json_error(r: Response, status: int, *needles: str) -> None:
    assert r.status == status, (r.status, r.body[:300])
    assert r.headers["content-type"].startswith("application/json")
    message = json.loads(r.body)["error"]
    for needle in needles:
        assert needle in message, message


def _post(body: bytes, ctype: str, target: str = "/", rid: str = "bad") -> bytes:
    return build_request("POST", target, [("X-Request-Id", rid), ("Content-Type", ctype)], body)


PARAMETERS_NOT_OBJECTS = ['"a string"', "[1, 2]", "3", "true"]


@pytest.mark.parametrize("params", PARAMETERS_NOT_OBJECTS)
@pytest.mark.parametrize("ctype", ["application/json", "tensor/base64"])
def test_parameters_that_are_not_an_object_are_a_400(
    decode_server: str, reference: Reference, latents: Callable[[int], torch.Tensor], params: str, ctype: str
) -> None:
    z = latents(0)
    raw = base64.b64encode(z.numpy().tobytes()).decode()
    body = f'{{"inputs": "{raw}", "parameters": {params}}}'.encode()
    conn = _conn(decode_server)
    r = conn.exchange(_post(body, ctype, f"/?{SHAPE_Q}"))
    _assert_json_error(r, 400, "parameters")
    _decode_ok(conn, z, reference, "next")  # same connection, its own answer
    conn.close()


@pytest.mark.parametrize(
    "target",
    [
        f"/?{SHAPE_Q}&jpeg_quality=" + "9" * 5000,
        f"/?{SHAPE_Q}&height=-" + "1" * 4400,
        "/?shape=1&shape=4&shape=8&shape=" + "8" * 4500 + "&dtype=float32",
        "/?shape=" + "[" * 1000 + "1" + "]" * 1000 + "&dtype=float32",
    ],
    ids=["jpeg_quality-5000-digits", "height-4400-digits", "shape-4500-digits", "shape-json-1000-deep"],
)
def test_unreadable_query_values_are_a_400(
    decode_server: str, reference: Reference, latents: Callable[[int], torch.Tensor], target: str
) -> None:
    conn = _conn(decode_server)
    r = conn.exchange(_post(latents(1).numpy().tobytes(), "tensor/binary", target))
    assert r.status == 400, r.body[:300]
    assert r.headers["content-type"].startswith("application/json")
    _decode_ok(conn, latents(1), reference, "after-query")
    conn.close()


@pytest.mark.parametrize(
    "body",
    [
        b'{"inputs": ' + b"[" * 1000 + b"1" + b"]" * 1000 + b"}",
        b'{"inputs": "x", "parameters": ' + b'{"a":' * 1000 + b"1" + b"}" * 1000 + b"}",
        b'{"inputs": "x", "parameters": ' + b'{"a":' * 1100 + b"1" + b"}" * 1100 + b"}",
        b'{"inputs": 1, "parameters": {"seed": ' + b"9" * 5000 + b"}}",
        b'{"inputs": "\xff\xfe"}',
        b'{"inputs": NaN}',
    ],
    ids=["inputs-1000-deep", "parameters-1000-deep", "parameters-1100-deep", "5000-digit-int", "bad-utf8", "nan"],
)
def test_malformed_json_is_a_400(
    decode_server: str, reference: Reference, latents: Callable[[int], torch.Tensor], body: bytes
) -> None:
    conn = _conn(decode_server)
    r = conn.exchange(_post(body, "application/json"))
    assert r.status == 400, r.body[:300]
    assert r.headers["content-type"].startswith("application/json")
    _decode_ok(conn, latents(2), reference, "after-json")
    conn.close()


@pytest.mark.parametrize("seed", [str(2**64), str(2**70), "9" * 5000, "-1"])
def test_encode_seed_out_of_range_is_a_400(encode_server: str, seed: str) -> None:
    png = fuzz.image_corpus()["png"]
    conn = _conn(encode_server)
    r = conn.exchange(_post(png, "image/png", f"/?sample=true&seed={seed}"))
    assert r.status == 400, r.body[:300]
    r = conn.exchange(_post(png, "image/png", "/?sample=true&seed=42", rid="ok"))
    assert r.status == 200 and r.headers["x-request-id"] == "ok"
    conn.close()


@pytest.mark.parametrize(
    ("name", "status"),
    [
        ("png-9000x9000-77KiB", 400),  # over MAX_PIXELS: refused from the header, before decoding
        ("png-bomb-40000x40000", 413),  # Pillow's decompression-bomb limit
        ("eps", 415),  # not an allowed format (EPS would go to Ghostscript)
        ("png-truncated", 400),
        ("png-1x1", 400),
        ("random-bytes", 415),
    ],
)
def test_bad_images_for_encode(encode_server: str, name: str, status: int) -> None:
    body = fuzz.image_corpus()[name]
    conn = _conn(encode_server)
    started = time.monotonic()
    r = conn.exchange(_post(body, "image/png"))
    assert r.status == status, r.body[:300]
    assert r.headers["content-type"].startswith("application/json")
    if name.startswith("png-9000"):
        assert time.monotonic() - started < 2.0  # 81 Mpixel never decoded
    conn.close()


def test_accept_octet_stream_is_refused_by_parse_before_any_decode(decode_server: str) -> None:
    conn = _conn(decode_server)
    data = build_request(
        "POST",
        f"/?{SHAPE_Q}&output_type=pil",
        [("Content-Type", "tensor/binary"), ("Accept", "application/octet-stream")],
        torch.zeros(1, 4, 8, 8).numpy().tobytes(),
    )
    r = conn.exchange(data)
    _assert_json_error(r, 406, "cannot answer with application/octet-stream")
    conn.close()


def test_cpu_batch_over_host_memory_is_a_413(decode_server: str) -> None:
    z = torch.zeros(256, 4, 64, 64)  # 256 x 512x512 float32: ~300 GiB estimated, more than any CI machine
    conn = _conn(decode_server)
    q = "shape=256&shape=4&shape=64&shape=64&dtype=float32&output_type=pt"
    r = conn.exchange(_post(z.numpy().tobytes(), "tensor/binary", f"/?{q}"))
    _assert_json_error(r, 413, "GiB of memory")
    conn.close()


@pytest.mark.parametrize("upgrade", ["websocket", "h2c", "foo"])
def test_upgrade_request_with_a_body_gets_an_answer(
    decode_server: str, reference: Reference, latents: Callable[[int], torch.Tensor], upgrade: str
) -> None:
    """Two causes of requests that never got an answer (the fuzzer's lost requests): with the websockets
    package installed, uvicorn handed ``Upgrade: websocket`` to its WebSocket protocol (on both parsers),
    which never answers a POST; and httptools hands the app an upgrade request with its body dropped (an
    answer to an empty body). Now: an answer within seconds (httptools: a 400 saying why), on both parsers."""
    z = latents(3)
    conn = _conn(decode_server)
    data = build_request(
        "POST",
        f"/?{SHAPE_Q}&output_type=pt",
        [("Content-Type", "tensor/binary"), ("Connection", "Upgrade"), ("Upgrade", upgrade)],
        z.numpy().tobytes(),
    )
    r = conn.exchange(data, timeout=5)
    assert r.status in (200, 400), r.body[:200]  # httptools: 400 (it cannot read the body); h11: the answer
    assert r.headers["content-type"].startswith(("application/json", "tensor/binary"))
    conn.close()
    conn = _conn(decode_server)
    _decode_ok(conn, z, reference, "after-upgrade")
    conn.close()


# (method, path, headers, status, whether the answer goes out before the body is read)
UNREAD_BODY_CASES = [
    ("POST", "/nope", [], 404, True),
    ("PUT", "/", [], 405, True),
    ("POST", "/", [("Accept", "application/xml")], 406, True),
    ("POST", "/", [(f"X-H{i}", "v") for i in range(120)], 431, True),
    ("POST", "/", [("Content-Type", "text/csv")], 415, False),
    ("POST", "/", [("Content-Type", "tensor/binary")], 400, False),
]


@pytest.mark.parametrize(("method", "path", "headers", "status", "unread"), UNREAD_BODY_CASES)
def test_answers_sent_before_the_body_was_read_do_not_leak_into_the_next_request(
    decode_server: str,
    reference: Reference,
    latents: Callable[[int], torch.Tensor],
    method: str,
    path: str,
    headers: list[tuple[str, str]],
    status: int,
    unread: bool,
) -> None:
    """A refusal sent without reading the body closes the connection (``Connection: close``), so the body's
    bytes can never be read as the next request; after one that read the body the connection stays open.
    Either way the next request gets its own answer, never the smuggled one."""
    z = latents(4)
    # the body is a whole valid request: if it were misread as the next request, its answer would show
    smuggled = build_request("POST", f"/?{SHAPE_Q}&output_type=pt", [("X-Request-Id", "smuggled")], z.numpy().tobytes())
    conn = _conn(decode_server)
    r = conn.exchange(build_request(method, path, [("X-Request-Id", "first"), *headers], smuggled), method=method)
    assert r.status == status, r.body[:200]
    assert (r.headers.get("connection") == "close") == unread
    assert r.headers.get("x-request-id") in (None, "first")
    _decode_ok(conn, z, reference, "second")  # reconnects when closed
    conn.close()


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2])
def test_fuzzed_requests_on_one_connection(
    decode_server: str, encode_server: str, reference: Reference, latents: Callable[[int], torch.Tensor], seed: int
) -> None:
    """A few hundred fuzzed requests per server: no 5xx, every one answered, every answer labelled with its
    own request id, canaries on the same connection correct (``make stress`` runs thousands)."""
    for url, encode in ((decode_server, False), (encode_server, True)):
        parts = urlsplit(url)
        canary = (
            fuzz.encode_canary(reference, fuzz.image_corpus()["png"])
            if encode
            else fuzz.decode_canary(reference, latents(9))
        )
        res = fuzz.run_fuzz(
            parts.hostname or "", int(parts.port or 80), fuzz.cases(150, encode=encode, seed=seed), canary
        )
        assert res.server_errors == [] and res.no_answer == [] and res.wrong_id == [] and res.canary_wrong == []
        assert res.canaries == 150 // fuzz.CANARY_EVERY
