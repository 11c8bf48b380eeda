"""The HTTP layer against a real uvicorn server on loopback, with toy handlers loaded from disk."""

from __future__ import annotations

import base64
import concurrent.futures
import io
import time
from pathlib import Path
from typing import Any

import pytest
import requests
import torch
from PIL import Image

from hf_remote_vae_toolkit import protocol
from hf_remote_vae_toolkit.testing import running_server

TOY = Path(__file__).parent / "toy_handlers"

DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.uint8]
SHAPES = [(2, 16, 64), (1, 4, 8, 8), (1, 16, 3, 4, 4)]


def post_tensor(url: str, tensor: torch.Tensor, accept: str = "tensor/binary", **params: Any) -> requests.Response:
    query = {"shape": list(tensor.shape), "dtype": protocol.dtype_name(tensor.dtype), **params}
    return requests.post(
        url,
        data=protocol.tensor_to_bytes(tensor),
        params=query,
        headers={"Content-Type": "tensor/binary", "Accept": accept},
        timeout=30,
    )


# --------------------------------------------------------------------------- the stock contract


def test_health_and_root(echo_url: str) -> None:
    for path in ("/", "/health"):
        r = requests.get(echo_url + path, timeout=5)
        assert r.status_code == 200 and r.text == "Ok"


def test_stock_json_handler_runs_unchanged(echo_url: str) -> None:
    r = requests.post(echo_url, json={"inputs": "hello", "parameters": {"k": 1}}, timeout=10)
    assert r.status_code == 200
    assert r.json() == {"echo": "hello", "parameters": {"k": 1}}
    assert r.headers["content-type"].startswith("application/json")
    assert r.headers["x-request-id"]


def test_predict_route_and_query_parameters_become_parameters_as_on_the_stock_toolkit(echo_url: str) -> None:
    r = requests.post(
        echo_url + "/predict",
        data=b'{"inputs": [1, 2]}',
        params=[("shape", "1"), ("shape", "4"), ("flag", "TRUE"), ("f", "0.18215"), ("n", "-3"), ("s", "jpg")],
        headers={"Content-Type": "Application/JSON; charset=UTF-8"},
        timeout=10,
    )
    assert r.status_code == 200, r.text
    assert r.json() == {
        "echo": [1, 2],
        # the stock toolkit's reading: last value wins, only str.isnumeric() -> int, exact true/false -> bool
        "parameters": {"shape": 4, "flag": "TRUE", "f": "0.18215", "n": "-3", "s": "jpg"},
    }


def test_request_id_is_echoed(echo_url: str) -> None:
    r = requests.post(echo_url, json={"inputs": 1}, headers={"X-Request-Id": "abc123"}, timeout=10)
    assert r.headers["x-request-id"] == "abc123"


def test_legacy_pipeline_py_is_found() -> None:
    with running_server(TOY / "legacy") as url:
        r = requests.post(url, json={"inputs": "x"}, timeout=10)
    assert r.json() == {"legacy": True, "inputs": "x"}


@pytest.mark.parametrize(("accept", "fmt"), [("image/png", "PNG"), ("image/jpeg", "JPEG"), ("image/jpg", "JPEG")])
def test_pil_result_served_by_accept(accept: str, fmt: str) -> None:
    with running_server(TOY / "image") as url:
        r = requests.post(
            url, json={"inputs": "", "parameters": {"width": 40, "height": 24}}, headers={"Accept": accept}
        )
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == ("image/png" if fmt == "PNG" else "image/jpeg")
        image = Image.open(io.BytesIO(r.content))
        assert image.format == fmt and image.size == (40, 24)
        # JSON (the default) carries the image as base64 PNG
        r = requests.post(url, json={"inputs": ""}, timeout=10)
        decoded = Image.open(io.BytesIO(base64.b64decode(r.json())))
        assert decoded.size == (32, 16) and decoded.getpixel((0, 0)) == (255, 0, 0)


# --------------------------------------------------------------------------- tensors on the wire


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).split(".")[-1])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{len(s)}d")
def test_tensor_round_trip_is_exact(tensor_url: str, dtype: torch.dtype, shape: tuple[int, ...]) -> None:
    gen = torch.Generator().manual_seed(0)
    if dtype == torch.uint8:
        tensor = torch.randint(0, 256, shape, dtype=torch.uint8, generator=gen)
    else:
        tensor = (torch.randn(shape, generator=gen) * 3).to(dtype)
    r = post_tensor(tensor_url, tensor)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "tensor/binary"
    assert r.headers["shape"] == "[" + ",".join(map(str, shape)) + "]"
    assert r.headers["dtype"] == protocol.dtype_name(dtype)
    back = protocol.tensor_from_response(r.content, r.headers)
    assert back.dtype == dtype and torch.equal(back, tensor)


def test_non_contiguous_tensor_is_sent_in_logical_order(tensor_url: str) -> None:
    tensor = torch.arange(24, dtype=torch.float32).reshape(2, 3, 4).transpose(1, 2)
    back = protocol.tensor_from_response(
        post_tensor(tensor_url, tensor).content, post_tensor(tensor_url, tensor).headers
    )
    assert torch.equal(back, tensor)


def test_tensor_base64_in_and_out(tensor_url: str) -> None:
    tensor = torch.randn(1, 4, 2, 2).half()
    body = {"inputs": base64.b64encode(protocol.tensor_to_bytes(tensor)).decode()}
    r = requests.post(
        tensor_url,
        json=body,
        params={"shape": [1, 4, 2, 2], "dtype": "float16"},
        headers={"Content-Type": "tensor/base64", "Accept": "tensor/base64"},
        timeout=10,
    )
    assert r.status_code == 200, r.text
    payload = r.json()
    assert payload["parameters"] == {"shape": [1, 4, 2, 2], "dtype": "float16"}
    back = protocol.tensor_from_bytes(base64.b64decode(payload["inputs"]), [1, 4, 2, 2], "float16")
    assert torch.equal(back, tensor)


def test_missing_content_type_with_shape_and_dtype_is_a_tensor(tensor_url: str) -> None:
    tensor = torch.randn(1, 3, 4, 4)
    r = requests.post(
        tensor_url,
        data=protocol.tensor_to_bytes(tensor),
        params={"shape": [1, 3, 4, 4], "dtype": "float32"},
        timeout=10,
    )
    assert r.status_code == 200, r.text
    assert torch.equal(protocol.tensor_from_response(r.content, r.headers), tensor)


def test_missing_content_type_with_image_bytes_is_an_image(echo_url: str) -> None:
    buf = io.BytesIO()
    Image.new("LA", (10, 6)).save(buf, format="PNG")
    # the echo handler answers JSON; the image arrives as an RGB PIL image (serialised as base64 PNG)
    r = requests.post(echo_url, data=buf.getvalue(), timeout=10)
    assert r.status_code == 200, r.text
    echoed = Image.open(io.BytesIO(base64.b64decode(r.json()["echo"])))
    assert echoed.size == (10, 6) and echoed.mode == "RGB"


# --------------------------------------------------------------------------- every error answers JSON


def _assert_error(r: requests.Response, status: int, *needles: str) -> None:
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/json")
    message = r.json()["error"]
    for needle in needles:
        assert needle in message, message


def test_body_length_not_matching_shape(tensor_url: str) -> None:
    r = requests.post(
        tensor_url,
        data=b"\0" * 10,
        params={"shape": [1, 4, 2, 2], "dtype": "float16"},
        headers={"Content-Type": "tensor/binary"},
    )
    _assert_error(r, 400, "10 bytes", "32 bytes")


def test_unknown_dtype(tensor_url: str) -> None:
    r = requests.post(
        tensor_url,
        data=b"\0" * 8,
        params={"shape": [2], "dtype": "complex64"},
        headers={"Content-Type": "tensor/binary"},
    )
    _assert_error(r, 400, "complex64", "float16")


@pytest.mark.parametrize("shape", [[1, -4, 2], [0, 4], [10**6, 10**6], ["a"], [1] * 9])
def test_bad_or_absurd_shapes_are_refused_at_once(tensor_url: str, shape: list[Any]) -> None:
    started = time.perf_counter()
    r = requests.post(
        tensor_url,
        data=b"\0" * 16,
        params={"shape": shape, "dtype": "float16"},
        headers={"Content-Type": "tensor/binary"},
    )
    _assert_error(r, 400, "shape")
    assert time.perf_counter() - started < 2.0


def test_tensor_without_shape(tensor_url: str) -> None:
    r = requests.post(tensor_url, data=b"\0" * 4, headers={"Content-Type": "tensor/binary"})
    _assert_error(r, 400, "shape", "dtype")


def test_json_without_inputs(echo_url: str) -> None:
    _assert_error(requests.post(echo_url, json={"parameters": {}}), 400, '"inputs"')


def test_invalid_json(echo_url: str) -> None:
    r = requests.post(echo_url, data=b"{not json", headers={"Content-Type": "application/json"})
    _assert_error(r, 400, "not valid JSON")


def test_unsupported_content_type(echo_url: str) -> None:
    r = requests.post(echo_url, data=b"<x/>", headers={"Content-Type": "application/xml"})
    _assert_error(r, 415, "application/xml")


def test_missing_content_type_with_unreadable_body(echo_url: str) -> None:
    _assert_error(requests.post(echo_url, data=b"definitely not an image"), 415, "Content-Type")


def test_unsupported_accept_is_406_before_the_handler_runs() -> None:
    with running_server(TOY / "sleepy") as url:
        started = time.perf_counter()
        r = requests.post(url, json={"inputs": 1, "parameters": {"sleep": 3}}, headers={"Accept": "application/pdf"})
        _assert_error(r, 406, "application/pdf")
        assert time.perf_counter() - started < 2.0  # the 3 s handler never ran


def test_accept_list_takes_first_supported_entry(echo_url: str) -> None:
    r = requests.post(echo_url, json={"inputs": 1}, headers={"Accept": "application/pdf, application/json;q=0.9"})
    assert r.status_code == 200 and r.json()["echo"] == 1


def test_a_stock_handlers_exception_is_a_400_with_its_message_as_on_the_stock_toolkit(echo_url: str) -> None:
    r = requests.post(echo_url, json={"inputs": "boom"})
    _assert_error(r, 400, "secret internal detail")  # handler authors report bad input this way
    assert requests.post(echo_url, json={"inputs": "ok"}).json()["echo"] == "ok"


def test_oversized_body_is_413(echo_url: str) -> None:
    r = requests.post(echo_url, data=b"x" * (64 * 1024 + 1), headers={"Content-Type": "application/json"})
    _assert_error(r, 413, "MAX_REQUEST_BYTES")


def test_oversized_streamed_body_without_length_is_413(echo_url: str) -> None:
    def chunks() -> Any:
        for _ in range(40):
            yield b"x" * 4096

    r = requests.post(echo_url, data=chunks(), headers={"Content-Type": "application/json"})
    _assert_error(r, 413, "MAX_REQUEST_BYTES")


def test_unknown_route_is_json_404(echo_url: str) -> None:
    _assert_error(requests.get(echo_url + "/nope"), 404)


def test_api_token_guards_posts_but_not_health() -> None:
    with running_server(TOY / "echo", api_token="s3cret") as url:
        _assert_error(requests.post(url, json={"inputs": 1}), 401, "Bearer")
        _assert_error(requests.post(url, json={"inputs": 1}, headers={"Authorization": "Bearer nope"}), 401)
        ok = requests.post(url, json={"inputs": 1}, headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200 and ok.json()["echo"] == 1
        assert requests.get(url + "/health").status_code == 200


# --------------------------------------------------------------------------- liveness and metrics


def test_health_answers_while_the_handler_sleeps() -> None:
    with running_server(TOY / "sleepy") as url, concurrent.futures.ThreadPoolExecutor(1) as pool:
        slow = pool.submit(requests.post, url, json={"inputs": 1, "parameters": {"sleep": 2}}, timeout=30)
        time.sleep(0.3)  # the handler is now sleeping
        started = time.perf_counter()
        assert requests.get(url + "/health", timeout=5).status_code == 200
        assert time.perf_counter() - started < 0.5
        assert slow.result().json()["slept"] == 2


def test_metrics_expose_autoscaler_gauges_and_counts(echo_url: str) -> None:
    requests.post(echo_url, json={"inputs": 1})
    text = requests.get(echo_url + "/metrics").text
    for name in ("inf_queue_size", "inf_batch_current_size", "hf_vae_request_duration_seconds_bucket"):
        assert name in text
    assert 'hf_vae_requests_total{method="POST",status="200"}' in text


def test_output_finish_runs_off_the_worker_thread() -> None:
    from hf_remote_vae_toolkit.server import Output

    threads: dict[str, str] = {}

    class Deferred:
        def __call__(self, data: dict[str, Any]) -> Output:
            import threading

            threads["handler"] = threading.current_thread().name

            def finish(value: bytes) -> bytes:
                threads["finish"] = threading.current_thread().name
                return value.upper()

            return Output(b"encoded later", media_type="video/mp4", finish=finish, headers={"X-Tiled": "1"})

    with running_server(handler=Deferred()) as url:
        r = requests.post(url, json={"inputs": 1}, headers={"Accept": "text/plain"}, timeout=10)
    assert r.status_code == 200 and r.content == b"ENCODED LATER"
    assert r.headers["content-type"].startswith("text/plain") and r.headers["x-tiled"] == "1"
    assert threads["handler"].startswith("vae-worker") and not threads["finish"].startswith("vae-worker")
