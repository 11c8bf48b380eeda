"""A generator of malformed requests over the whole protocol, and the loop that fires them.

Each case is the exact bytes of one request. Categories (``CATEGORIES``): query parameters with junk
values (huge integers, NaN, deep JSON, unicode digits, repeated keys), JSON and ``tensor/base64`` bodies
with wrong types (``parameters`` a string, list, number or ``true``; ``inputs`` of every type; 1,000-deep
nesting; 5,000-digit integers; invalid UTF-8; truncation), ``tensor/binary`` bodies whose length, shape or
dtype is wrong, content types, ``Accept`` values, request heads (150 headers, 70 KiB of header, odd
``X-Request-Id``), methods and paths (with bodies left unread), framing (chunked, bad chunk sizes, both
``Content-Length`` and ``Transfer-Encoding``, a body longer than its ``Content-Length``, ``Expect:
100-continue``, HTTP/1.0, ``Connection: upgrade``), and for encode servers image bodies (corrupt,
truncated, decompression bombs, 9000x9000 in 77 KiB, 16-bit, CMYK, animated, palette with transparency,
EPS, 1x1).

Rules checked for every case, on one kept-alive connection per server: an answer comes (none missing),
its status is below 500, and an answer the app produced carries the request's own ``X-Request-Id`` (an
answer that reached the wrong request would not). Every ``CANARY_EVERY`` cases a valid request on the
same connection must get the right answer (compared with a local decode).
"""

from __future__ import annotations

import base64
import io
import json
import random
import struct
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image

from .rawhttp import Connection, NoAnswer, Response, build_request

__all__ = ["Case", "cases", "run_fuzz", "FuzzResult", "CATEGORIES"]

CANARY_EVERY = 25


@dataclass
class Case:
    category: str
    data: bytes
    request_id: str
    method: str = "POST"
    note: str = ""
    #: the case leaves bytes of its own on the connection (a body longer than its Content-Length, garbage):
    #: what follows on that connection is the client's mess, so the loop reconnects after it
    poisons: bool = False


@dataclass
class FuzzResult:
    sent: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    server_errors: list[str] = field(default_factory=list)  # 5xx: category, note, status, body
    no_answer: list[str] = field(default_factory=list)
    wrong_id: list[str] = field(default_factory=list)
    canaries: int = 0
    canary_wrong: list[str] = field(default_factory=list)
    by_category: Counter[str] = field(default_factory=Counter)
    non_json_errors: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        return {
            "sent": self.sent,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "5xx": len(self.server_errors),
            "5xx_examples": self.server_errors[:20],
            "no_answer": len(self.no_answer),
            "no_answer_examples": self.no_answer[:20],
            "wrong_request_id": len(self.wrong_id),
            "wrong_request_id_examples": self.wrong_id[:20],
            "canaries": self.canaries,
            "canary_wrong": len(self.canary_wrong),
            "canary_wrong_examples": self.canary_wrong[:20],
            "by_category": dict(self.by_category),
            "errors_not_json": dict(self.non_json_errors),
        }


# --------------------------------------------------------------------------- value pools

DEEP = 1000


def _deep_json(depth: int) -> str:
    return "[" * depth + "1" + "]" * depth


def _deep_obj(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


JUNK_QUERY = [
    "",
    "abc",
    "-1",
    "0",
    "1e309",
    "-1e309",
    "nan",
    "NaN",
    "inf",
    "-inf",
    "9" * 5000,
    "-" + "9" * 5000,
    "1" + "0" * 4301,
    "true",
    "TRUE",
    "false",
    "null",
    "None",
    "[1,2]",
    "[]",
    "[-1]",
    "[0]",
    _deep_json(DEEP),
    _deep_json(5000),
    "\u00b2",
    "\u0663",
    "\u00bd",
    "%ff%fe",
    "%00",
    "x" * 20000,
    "1.5",
    "1,2",
    " 1 ",
    "0x10",
    "1_000",
    "2" * 30,
    str(2**64),
    str(-(2**63) - 1),
    "pil",
    "pt",
    "mp4",
    "jpg",
    "webp",
    "gif",
    "-1,1",
    "0,1",
    "float16",
    "uint8",
    "int64",
    "bool",
]

QUERY_KEYS = [
    "output_type",
    "partial_postprocess",
    "image_format",
    "jpeg_quality",
    "height",
    "width",
    "scaling_factor",
    "shift_factor",
    "do_scaling",
    "latents_mean",
    "latents_std",
    "shape",
    "dtype",
    "seed",
    "sample",
    "value_range",
    "return_type",
    "processor",
    "input_tensor_type",
    "output_tensor_type",
    "x" * 300,
    "",
    "\u00e9",
    "parameters",
    "inputs",
]


def _junk_json_value(rng: random.Random, depth: int = 0) -> Any:
    r = rng.random()
    if depth > 2 or r < 0.45:
        return rng.choice(
            [
                None,
                True,
                False,
                0,
                -1,
                1.5,
                1e308,
                -(2**63),
                2**64,
                "",
                "abc",
                "pil",
                "pt",
                "jpg",
                "float16",
                "x" * 1000,
                [1, 4, 8, 8],
                [],
                {},
                [-1],
                [0, 0],
                "AAAA",
                "not base64!",
            ]
        )
    if r < 0.7:
        return [_junk_json_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    return {rng.choice(QUERY_KEYS): _junk_json_value(rng, depth + 1) for _ in range(rng.randint(0, 4))}


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value, allow_nan=True).encode()


# --------------------------------------------------------------------------- images for encode servers


def _png(image: Image.Image, **opts: Any) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG", **opts)
    return out.getvalue()


def _save(image: Image.Image, fmt: str, **opts: Any) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **opts)
    return out.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def big_png(width: int, height: int) -> bytes:
    """A valid 1-bit grey PNG of ``width x height`` that compresses to almost nothing (a decompression bomb
    when large: 9000x9000 is about 77 KiB)."""
    row = b"\x00" + b"\x00" * ((width + 7) // 8)
    comp = zlib.compressobj(9)
    data = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", data) + _png_chunk(b"IEND", b"")


def image_corpus() -> dict[str, bytes]:
    """Image bodies, good and bad, for encode servers (built once)."""
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    png = _png(rgb)
    jpeg = _save(rgb, "JPEG", quality=80)
    frames = [Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)) for _ in range(3)]
    gif_out = io.BytesIO()
    frames[0].save(gif_out, format="GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    pal = rgb.convert("P")
    pal.info["transparency"] = 0
    corpus = {
        "png": png,
        "jpeg": jpeg,
        "png-truncated": png[: len(png) // 2],
        "jpeg-truncated": jpeg[: len(jpeg) // 2],
        "png-corrupt": png[:50] + bytes(rng.integers(0, 256, 200, dtype=np.uint8)) + png[250:],
        "random-bytes": bytes(rng.integers(0, 256, 4096, dtype=np.uint8)),
        "empty": b"",
        "png-16bit": Image.frombytes("I;16", (32, 32), rng.integers(0, 65536, 32 * 32, dtype=np.uint16).tobytes()).save(
            b := io.BytesIO(), format="PNG"
        )
        or b.getvalue(),
        "jpeg-cmyk": _save(rgb.convert("CMYK"), "JPEG"),
        "gif-animated": gif_out.getvalue(),
        "png-palette-transparency": _png(pal),
        "png-la": _png(rgb.convert("LA")),
        "png-1bit": _png(rgb.convert("1")),
        "png-1x1": _png(Image.new("RGB", (1, 1))),
        "png-9000x9000-77KiB": big_png(9000, 9000),
        "png-bomb-40000x40000": big_png(40000, 40000),
        "png-header-only-huge": big_png(60000, 60000)[:33],
        "webp": _save(rgb, "WEBP"),
        "bmp": _save(rgb, "BMP"),
        "tiff": _save(rgb, "TIFF"),
        "tiff-float": _save(Image.fromarray(rng.random((16, 16), dtype=np.float32)), "TIFF"),
        "eps": b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n",
        "svg": b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>',
        "ico": _save(rgb.resize((16, 16)), "ICO"),
    }
    return corpus


# --------------------------------------------------------------------------- cases

LATENT_SHAPE = (1, 4, 8, 8)


def _latent_bytes(rng: random.Random) -> bytes:
    return np.random.default_rng(rng.randrange(2**32)).standard_normal(LATENT_SHAPE, dtype=np.float32).tobytes()


def _query(pairs: list[tuple[str, str]]) -> str:
    from urllib.parse import quote

    return "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in pairs)


_SHAPE_Q = [("shape", "1"), ("shape", "4"), ("shape", "8"), ("shape", "8"), ("dtype", "float32")]


def _post(
    rid: str,
    target: str,
    body: bytes,
    ctype: str | None,
    extra: list[tuple[str, str]] | None = None,
    **kw: Any,
) -> bytes:
    headers = [("X-Request-Id", rid)]
    if ctype is not None:
        headers.append(("Content-Type", ctype))
    headers += extra or []
    return build_request("POST", target, headers, body, **kw)


def _case_query(rng: random.Random, rid: str, encode: bool, images: dict[str, bytes]) -> Case:
    pairs = list(_SHAPE_Q) if not encode or rng.random() < 0.3 else []
    for _ in range(rng.randint(1, 4)):
        pairs.append((rng.choice(QUERY_KEYS), rng.choice(JUNK_QUERY)))
    if rng.random() < 0.05:
        pairs = [("k", "v")] * rng.choice([1000, 5000])
    rng.shuffle(pairs)
    if encode and not any(k == "shape" for k, _ in pairs):
        body, ctype = images["png"], None if rng.random() < 0.5 else "image/png"
    else:
        body, ctype = _latent_bytes(rng), rng.choice(["tensor/binary", None, "application/octet-stream"])
    accept = rng.choice([None, "image/jpeg", "image/png", "tensor/binary", "application/json", "*/*"])
    extra = [("Accept", accept)] if accept else []
    return Case("query", _post(rid, "/?" + _query(pairs), body, ctype, extra), rid)


def _case_json(rng: random.Random, rid: str, encode: bool, images: dict[str, bytes]) -> Case:
    choice = rng.randrange(12)
    if choice == 0:
        body = b'{"inputs": ' + _deep_json(DEEP).encode() + b"}"
    elif choice == 1:
        body = b'{"inputs": "x", "parameters": ' + _deep_obj(rng.choice([DEEP, 1023, 1100])).encode() + b"}"
    elif choice == 2:
        body = b'{"inputs": 1, "parameters": {"seed": ' + b"9" * 5000 + b"}}"
    elif choice == 3:
        body = b'{"inputs": "abc", "parameters": {"shape": [1, 4, 8, 8], "dtype": "float32", "x": 1e999}}'
    elif choice == 4:
        body = b'{"inputs": "\xff\xfe", "parameters": {}}'
    elif choice == 5:
        body = _json_bytes({"inputs": _junk_json_value(rng), "parameters": _junk_json_value(rng)})[
            : rng.randint(1, 200)
        ]
    elif choice == 6:
        raw = base64.b64encode(_latent_bytes(rng)).decode()
        params = rng.choice(["a string", [1, 2], 3, True, None, {"shape": "[1,4,8,8]", "dtype": "float32"}])
        body = _json_bytes({"inputs": raw, "parameters": params})
    elif choice == 7:
        raw = base64.b64encode(_latent_bytes(rng)).decode()
        params = {"shape": _junk_json_value(rng), "dtype": _junk_json_value(rng)}
        if rng.random() < 0.5:
            params[rng.choice(QUERY_KEYS)] = _junk_json_value(rng)
        body = _json_bytes({"inputs": raw, "parameters": params})
    elif choice == 8:
        body = rng.choice([b"", b"null", b"[]", b"1", b'"inputs"', b"{}", b'{"instances": []}', b"\xef\xbb\xbf{}"])
    elif choice == 9:
        body = _json_bytes({"inputs": _junk_json_value(rng), "parameters": _junk_json_value(rng)})
    elif choice == 10:
        body = b'{"inputs": [' + b",".join([b"1.0"] * rng.choice([10, 100000])) + b"]}"
    else:
        body = b'{"inputs": NaN, "parameters": {"output_type": Infinity}}'
    ctype = rng.choice(["application/json", "application/json; charset=utf-8", "tensor/base64", "APPLICATION/JSON"])
    target = "/" if rng.random() < 0.7 else "/predict?" + _query([(rng.choice(QUERY_KEYS), rng.choice(JUNK_QUERY))])
    return Case("json", _post(rid, target, body, ctype), rid)


def _case_tensor(rng: random.Random, rid: str, encode: bool, images: dict[str, bytes]) -> Case:
    shape = rng.choice(
        [
            ["1", "4", "8", "8"],
            ["1", "4", "8"],
            ["4", "8", "8"],
            ["1", "4", "8", "8", "1"],
            ["1"] * 7,
            ["0", "4", "8", "8"],
            ["-1", "4", "8", "8"],
            ["1", "3", "8", "8"],
            ["1", "16", "8", "8"],
            ["1", "4", "100000", "100000"],
            ["1000", "4", "64", "64"],
            ["1", "4", "1", "1"],
            ["[1,4,8,8]"],
            ["1", "4", "8", "x"],
            ["1", "4", "8", "9" * 5000],
            ["1", "64", "4"],
            ["1", "4", "2", "64"],
        ]
    )
    dtype = rng.choice(["float32", "float16", "bfloat16", "uint8", "int64", "FLOAT32", "", "float"])
    n = 1
    for d in shape:
        n *= int(d) if d.lstrip("-").isdigit() and len(d) < 10 else 1
    itemsize = {"float32": 4, "float16": 2, "bfloat16": 2, "uint8": 1}.get(dtype, 4)
    length = rng.choice([abs(n) * itemsize, abs(n) * itemsize + 1, 0, 7, 256])
    length = min(length, 1 << 20)
    body = bytes(np.random.default_rng(rng.randrange(2**32)).integers(0, 256, length, dtype=np.uint8))
    if rng.random() < 0.3 and dtype == "float32":
        arr = np.frombuffer(body[: (len(body) // 4) * 4], dtype=np.float32).copy()
        arr[:] = rng.choice([np.nan, np.inf, -np.inf, 1e38, 0.0])
        body = arr.tobytes() + body[len(arr) * 4 :]
    pairs = [("shape", d) for d in shape] + [("dtype", dtype)]
    if rng.random() < 0.5:
        pairs.append((rng.choice(QUERY_KEYS), rng.choice(JUNK_QUERY)))
    ctype = rng.choice(["tensor/binary", None, "application/octet-stream"])
    return Case("tensor", _post(rid, "/?" + _query(pairs), body, ctype), rid)


def _case_ctype_accept(rng: random.Random, rid: str, encode: bool, images: dict[str, bytes]) -> Case:
    ctype = rng.choice(
        [
            "text/plain",
            "multipart/form-data; boundary=x",
            "application/x-www-form-urlencoded",
            "image/png",
            "image/svg+xml",
            "audio/wav",
            "video/mp4",
            "tensor/binary; charset=utf-8",
            "",
            ";",
            "a" * 5000,
            "image/",
            "*/*",
        ]
    )
    accept = rng.choice(
        [
            "application/octet-stream",
            "video/mp4",
            "text/plain",
            "image/gif",
            "image/tiff",
            "image/bmp",
            "application/xml",
            "foo/bar, baz/qux",
            "image/jpeg;q=0",
            "*/*;q=0",
            ",,,",
            "tensor/base64",
            "image/*",
            "text/*",
            "x" * 8000,
        ]
    )
    body = rng.choice([_latent_bytes(rng), images["png"], b"", b"hello"])
    pairs = _SHAPE_Q if rng.random() < 0.5 else []
    return Case("content-type/accept", _post(rid, "/?" + _query(pairs), body, ctype, [("Accept", accept)]), rid)


def _case_head(rng: random.Random, rid: str, encode: bool, images: dict[str, bytes]) -> Case:
    choice = rng.randrange(7)
    body = _latent_bytes(rng)
    target = "/?" + _query(_SHAPE_Q)
    headers: list[tuple[str, str]] = [("Content-Type", "tensor/binary")]
    if choice == 0:
        headers += [(f"X-Junk-{i}", "v") for i in range(150)]
    elif choice == 1:
        headers += [("X-Big", "y" * 70000)]
    elif choice == 2:
        headers += [("X-Big", "y" * 30000), ("X-Big2", "z" * 30000)]
    elif choice == 3:
        headers += [("Authorization", rng.choice(["Bearer", "Bearer " + "x" * 5000, "Basic abc", "\u00e9"]))]
    elif choice == 4:
        headers += [("Accept", ",".join(["image/x"] * 2000))]
    elif choice == 5:
        target = "/?" + "a=" + "b" * 60000
    else:
        headers += [("Accept-Encoding", "gzip"), ("Content-Encoding", "gzip")]
    data = build_request("POST", target, [("X-Request-Id", rid), *headers], body)
    return Case("head", data, rid)


def _case_method_path(rng: random.Random, rid: str, encode: bool, images: dict[str, bytes]) -> Case:
    method = rng.choice(["GET", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "POST", "TRACE", "FOO"])
    path = rng.choice(["/", "/predict", "/health", "/metrics", "/nope", "/../etc/passwd", "/%2e%2e/", "//", "/a" * 500])
    body = rng.choice([b"", _latent_bytes(rng), b"x" * 100000])
    data = build_request(method, path, [("X-Request-Id", rid), ("Content-Type", "tensor/binary")], body)
    return Case("method/path", data, rid, method=method)


def _case_framing(rng: random.Random, rid: str, encode: bool, images: dict[str, bytes]) -> Case:
    body = _latent_bytes(rng)
    target = "/?" + _query(_SHAPE_Q)
    base = [("X-Request-Id", rid), ("Content-Type", "tensor/binary")]
    choice = rng.randrange(9)
    if choice == 0:  # valid chunked
        chunks = b"".join(f"{len(p):x}\r\n".encode() + p + b"\r\n" for p in (body[:100], body[100:])) + b"0\r\n\r\n"
        data = build_request("POST", target, [*base, ("Transfer-Encoding", "chunked")], chunks)
    elif choice == 1:  # bad chunk size
        data = build_request("POST", target, [*base, ("Transfer-Encoding", "chunked")], b"zz\r\nabc\r\n0\r\n\r\n")
    elif choice == 2:  # both
        data = build_request(
            "POST", target, [*base, ("Transfer-Encoding", "chunked"), ("Content-Length", "5")], b"0\r\n\r\n"
        )
    elif choice == 3:  # body longer than its Content-Length: the rest is garbage on the connection
        data = build_request("POST", target, [*base, ("Content-Length", str(len(body) - 10))], body)
        return Case("framing", data, rid, poisons=True, note="body longer than Content-Length")
    elif choice == 4:
        data = build_request("POST", target, [*base, ("Content-Length", rng.choice(["-1", "abc", "1e3", "9" * 30]))])
    elif choice == 5:
        data = build_request("POST", target, [*base, ("Expect", "100-continue")], body)
    elif choice == 6:
        data = build_request("POST", target, base, body, version="HTTP/1.0")
    elif choice == 7:
        up = [("Connection", "Upgrade"), ("Upgrade", rng.choice(["websocket", "h2c", "foo"]))]
        data = build_request("POST", target, [*base, *up], body)
    else:
        data = rng.choice(
            [b"GARBAGE\r\n\r\n", b"POST / HTTP/9.9\r\n\r\n", b"\x16\x03\x01\x00\xa5\x01", b"POST\r\n\r\n"]
        )
        return Case("framing", data, rid, poisons=True, note="garbage")
    return Case("framing", data, rid)


def _case_image(rng: random.Random, rid: str, encode: bool, images: dict[str, bytes]) -> Case:
    name = rng.choice(sorted(images))
    body = images[name]
    ctype = rng.choice([None, "image/png", "image/jpeg", "application/octet-stream", "image/x-eps"])
    pairs: list[tuple[str, str]] = []
    if rng.random() < 0.5:
        pairs.append(
            rng.choice(
                [
                    ("sample", rng.choice(["true", "false", "1", "yes"])),
                    ("seed", rng.choice([str(2**70), "-1", "abc", "9" * 5000, "42"])),
                    ("value_range", rng.choice(["-1,1", "0,1", "2,3"])),
                    ("scaling_factor", rng.choice(["0", "nan", "-1", "1e309"])),
                    ("do_scaling", rng.choice(["true", "maybe"])),
                ]
            )
        )
        if pairs[-1][0] == "seed":
            pairs.append(("sample", "true"))
    return Case("image", _post(rid, "/?" + _query(pairs), body, ctype), rid, note=name)


CATEGORIES: dict[str, Callable[[random.Random, str, bool, dict[str, bytes]], Case]] = {
    "query": _case_query,
    "json": _case_json,
    "tensor": _case_tensor,
    "content-type/accept": _case_ctype_accept,
    "head": _case_head,
    "method/path": _case_method_path,
    "framing": _case_framing,
    "image": _case_image,
}


def cases(n: int, *, encode: bool, seed: int = 0, prefix: str = "f") -> Iterator[Case]:
    """``n`` malformed (or odd) requests for a decode or an encode server, reproducible from ``seed``."""
    rng = random.Random(seed)
    images = image_corpus()
    names = list(CATEGORIES)
    weights = [3, 3, 3, 2, 1, 1, 2, 4 if encode else 1]
    for i in range(n):
        category = rng.choices(names, weights)[0]
        yield CATEGORIES[category](rng, f"{prefix}{i:06d}", encode, images)


# --------------------------------------------------------------------------- the loop


def _is_app_json_error(r: Response) -> bool:
    return r.headers.get("content-type", "").startswith("application/json")


def run_fuzz(
    host: str,
    port: int,
    items: Iterator[Case],
    canary: Callable[[Connection, str], str | None] | None = None,
    timeout: float = 30.0,
) -> FuzzResult:
    """Fire ``items`` over one kept-alive connection (reconnecting when the server closes it); every
    ``CANARY_EVERY`` cases run ``canary(conn, request_id)`` (returns an error text or None)."""
    res = FuzzResult()
    conn = Connection(host, port, timeout)
    for i, case in enumerate(items):
        res.sent += 1
        res.by_category[case.category] += 1
        try:
            r = conn.exchange(case.data, timeout, case.method)
        except NoAnswer as exc:
            res.no_answer.append(f"{case.request_id} {case.category} {case.note}: {exc}; {case.data[:160]!r}")
            conn.close()
            continue
        res.statuses[r.status] += 1
        if r.status >= 500:
            res.server_errors.append(
                f"{case.request_id} {case.category} {case.note}: {r.status} {r.body[:200]!r}; {case.data[:200]!r}"
            )
        rid = r.headers.get("x-request-id")
        if rid is not None and rid != case.request_id and case.request_id.encode() in case.data[:4096]:
            res.wrong_id.append(f"{case.request_id} got the answer of {rid} ({r.status})")
        if r.status >= 400 and not _is_app_json_error(r):
            res.non_json_errors[f"{r.status} {r.headers.get('content-type', '')}"] += 1
        if case.poisons:
            conn.close()
        if canary is not None and (i + 1) % CANARY_EVERY == 0:
            res.canaries += 1
            try:
                problem = canary(conn, f"canary-{case.request_id}")
            except NoAnswer as exc:
                problem = f"no answer: {exc}"
                conn.close()
            if problem:
                res.canary_wrong.append(f"after {case.request_id} ({case.category}): {problem}")
    conn.close()
    return res


def decode_canary(reference: Any, latents: torch.Tensor) -> Callable[[Connection, str], str | None]:
    """A valid decode (raw float32 tensor) on the fuzzed connection, checked against the local decode."""
    body = latents.numpy().tobytes()
    q = _query([("shape", str(d)) for d in latents.shape] + [("dtype", "float32"), ("output_type", "pt")])
    expected = reference.raw(-1, latents)

    def check(conn: Connection, rid: str) -> str | None:
        r = conn.exchange(_post(rid, "/?" + q, body, "tensor/binary", [("Accept", "tensor/binary")]))
        if r.status != 200:
            return f"status {r.status}: {r.body[:200]!r}"
        if r.headers.get("x-request-id") != rid:
            return f"answer labelled {r.headers.get('x-request-id')}"
        got = torch.from_numpy(np.frombuffer(r.body, dtype=np.float32).copy()).reshape(expected.shape)
        err = float((got - expected).abs().max())
        return None if err < 1e-3 else f"max abs error {err:.3g} against the local decode"

    return check


def encode_canary(reference: Any, png: bytes) -> Callable[[Connection, str], str | None]:
    pixels = torch.from_numpy(np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(np.float32) / 255.0)
    expected = reference.encode((2 * pixels - 1).permute(2, 0, 1).unsqueeze(0))

    def check(conn: Connection, rid: str) -> str | None:
        r = conn.exchange(_post(rid, "/", png, "image/png", [("Accept", "tensor/binary")]))
        if r.status != 200:
            return f"status {r.status}: {r.body[:200]!r}"
        if r.headers.get("x-request-id") != rid:
            return f"answer labelled {r.headers.get('x-request-id')}"
        got = torch.from_numpy(np.frombuffer(r.body, dtype=np.float32).copy()).reshape(expected.shape)
        err = float((got - expected).abs().max())
        return None if err < 1e-3 else f"max abs error {err:.3g} against the local encode"

    return check
