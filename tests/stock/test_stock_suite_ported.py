"""The stock toolkit's own tests that need no model download, rewritten to run against OUR server.

huggingface-inference-toolkit 0.5.6 tests its serializers, query handling, custom / legacy handler
loading and the request form of every task in-process or against its container. These are our own
tests of the same cases, over HTTP, with the values the stock toolkit produces (checked side by side
in test_stock_matrix.py). They need no stock venv, so they run in every tier.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

JSON = {"Content-Type": "application/json"}

pytestmark = pytest.mark.filterwarnings("ignore:Palette images with Transparency:UserWarning")


def ask(post, url: str, value: object, accept: str | None = None, query: str = ""):
    headers = {**JSON, **({"Accept": accept} if accept else {})}
    return post(url, json.dumps(value).encode(), headers, query)


def image_bytes(fmt: str, mode: str = "RGB", size: tuple[int, int] = (20, 12)) -> bytes:
    y, x = np.mgrid[0 : size[1], 0 : size[0]]
    base = ((x * size[1] + y) % 256).astype(np.uint8)
    rgba = np.stack([base, base[::-1], np.flip(base, 1), 255 - base], axis=-1).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(rgba, mode="RGBA").convert(mode).save(out, format=fmt)
    return out.getvalue()


# ----------------------------------------------------------------------------- serializer (JSON out)


def test_json_serialization_of_numpy_arrays_and_floats(post, ours_urls) -> None:
    reply = ask(post, ours_urls["cases"], {"inputs": "ndarray"})
    assert (reply.status, reply.content_type) == (200, "application/json")
    assert reply.body == b'{"res":[2.0],"text":"I like you.","float":1.2}'


@pytest.mark.parametrize(
    ("case", "body"),
    [
        ("float32", b'{"score":1.2}'),  # the shortest repr of the float32, not 1.2000000476837158
        ("float64", b'{"score":0.9803440570831299}'),
        ("int64", b'{"count":7}'),
        ("bool_", b'{"flag":true}'),
        ("ndarray2d", b'{"m":[[0.0,0.33333334,0.6666667],[1.0,1.3333334,1.6666666]]}'),
        ("nan", b'{"value":null}'),  # valid JSON: NaN is not
        ("inf", b'{"pos":null,"neg":null}'),
        ("ndarray_nan", b'{"m":[null,1.0]}'),
        ("datetime", b'{"at":"2025-08-25T12:30:05.123456"}'),
        ("datetime_tz", b'{"at":"2025-08-25T12:30:00+00:00"}'),
        ("date", b'{"on":"2025-08-25"}'),
        ("uuid", b'{"id":"12345678-1234-5678-1234-567812345678"}'),
        ("big_int", b'{"n":9223372036854775808}'),
        ("tuple", b'[1,"two",3.0]'),
        ("none", b"null"),
        ("string", b'"hello"'),
        ("unicode", '{"text":"héllo ✓ 日本"}'.encode()),
    ],
)
def test_json_values_as_orjson_writes_them(post, ours_urls, case: str, body: bytes) -> None:
    reply = ask(post, ours_urls["cases"], {"inputs": case})
    assert (reply.status, reply.content_type, reply.body) == (200, "application/json", body)


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("bytes", "Type is not JSON serializable: bytes"),
        ("set", "Type is not JSON serializable: set"),
        ("int_keys", "Dict key must be str"),
        ("huge_int", "Integer exceeds 64-bit range"),
    ],
)
def test_json_unserialisable_results_are_a_400_naming_the_type(post, ours_urls, case: str, message: str) -> None:
    reply = ask(post, ours_urls["cases"], {"inputs": case})
    assert (reply.status, reply.content_type) == (400, "application/json")
    assert json.loads(reply.body) == {"error": message}


def test_json_images_inside_results_are_base64_png(post, ours_urls) -> None:
    import base64

    reply = ask(post, ours_urls["cases"], {"inputs": "image_in_json"})
    assert reply.status == 200
    items = json.loads(reply.body)
    assert [item["label"] for item in items] == ["cat", "dog"]
    assert items[0]["score"] == 0.9995332956314087
    masks = [Image.open(io.BytesIO(base64.b64decode(item["mask"]))) for item in items]
    assert [(m.format, m.mode, m.size) for m in masks] == [("PNG", "RGB", (6, 3)), ("PNG", "L", (6, 3))]
    assert masks[0].getpixel((0, 0)) == (255, 0, 0)
    assert masks[1].getpixel((5, 2)) == 128


# ----------------------------------------------------------------------------- serializer (images out)


@pytest.mark.parametrize(
    ("accept", "fmt"),
    [
        ("image/png", "PNG"),
        ("image/jpeg", "JPEG"),
        ("image/tiff", "TIFF"),
        ("image/bmp", "BMP"),
        ("image/gif", "GIF"),
        ("image/webp", "WEBP"),
    ],
)
def test_image_results_in_every_format_stock_writes(post, ours_urls, accept: str, fmt: str) -> None:
    reply = ask(post, ours_urls["cases"], {"inputs": "image:RGB"}, accept=accept)
    assert (reply.status, reply.content_type) == (200, accept)
    image = Image.open(io.BytesIO(reply.body))
    assert (image.format, image.size) == (fmt, (24, 16))


@pytest.mark.parametrize(("mode", "readback"), [("RGBA", {"RGBA"}), ("L", {"L"}), ("I;16", {"I;16", "I"})])
def test_png_results_keep_the_image_mode(post, ours_urls, mode: str, readback: set[str]) -> None:
    reply = ask(post, ours_urls["cases"], {"inputs": f"image:{mode}"}, accept="image/png")
    assert reply.status == 200
    image = Image.open(io.BytesIO(reply.body))
    assert image.mode in readback
    if mode == "RGBA":
        assert image.getextrema()[3] != (255, 255), "the alpha channel was dropped"
    if mode == "I;16":
        assert max(image.getextrema()) > 255, "16-bit values were truncated to 8 bits"


def test_rgba_as_jpeg_is_a_400_with_pillows_message(post, ours_urls) -> None:
    reply = ask(post, ours_urls["cases"], {"inputs": "image:RGBA"}, accept="image/jpeg")
    assert (reply.status, json.loads(reply.body)) == (400, {"error": "cannot write mode RGBA as JPEG"})


def test_a_dict_result_asked_as_png_is_a_400(post, ours_urls) -> None:
    reply = ask(post, ours_urls["echo"], {"inputs": "x"}, accept="image/png")
    assert reply.status == 400
    assert json.loads(reply.body) == {"error": "Can only serialize PIL.Image.Image, got <class 'dict'>"}


# ----------------------------------------------------------------------------- deserializers (bodies in)


def test_json_body_with_whitespace(post, ours_urls) -> None:
    reply = post(ours_urls["echo"], b'{\n\t"inputs": "i like you"\n}', JSON)
    assert (reply.status, reply.body) == (200, b'{"inputs":"i like you"}')


@pytest.mark.parametrize(
    ("fmt", "content_type", "mode"),
    [
        ("PNG", "image/png", "RGBA"),
        ("JPEG", "image/jpeg", "RGB"),
        ("JPEG", "image/jpg", "L"),
        ("TIFF", "image/tiff", "RGB"),
        ("BMP", "image/bmp", "RGB"),
        ("GIF", "image/gif", "P"),
        ("WEBP", "image/webp", "RGB"),
        ("PNG", "image/x-image", "LA"),
    ],
)
def test_image_bodies_reach_the_handler_as_rgb_images(post, ours_urls, fmt: str, content_type: str, mode: str) -> None:
    body = image_bytes(fmt, mode)
    expected = Image.open(io.BytesIO(body)).convert("RGB")
    reply = post(ours_urls["describe"], body, {"Content-Type": content_type})
    assert reply.status == 200, reply.body
    seen = json.loads(reply.body)
    assert seen["keys"] == ["inputs"]
    assert seen["data"]["inputs"] == {
        "type": "Image",
        "mode": "RGB",
        "size": [20, 12],
        "sha256": hashlib.sha256(expected.tobytes()).hexdigest(),
    }


@pytest.mark.parametrize(
    "content_type",
    [
        "audio/x-flac",
        "audio/flac",
        "audio/mpeg",
        "audio/x-mpeg-3",
        "audio/wave",
        "audio/wav",
        "audio/x-wav",
        "audio/ogg",
        "audio/x-audio",
        "audio/webm",
        "audio/webm;codecs=opus",
        "audio/AMR",
        "audio/amr",
        "audio/AMR-WB",
        "audio/m4a",
        "audio/x-m4a",
    ],
)
def test_audio_bodies_reach_the_handler_as_the_same_bytes(post, ours_urls, content_type: str) -> None:
    body = hashlib.sha512(content_type.encode()).digest() * 40
    reply = post(ours_urls["describe"], body, {"Content-Type": content_type})
    assert reply.status == 200, reply.body
    seen = json.loads(reply.body)
    assert seen["keys"] == ["inputs"]
    assert seen["data"]["inputs"] == {"type": "bytes", "len": len(body), "sha256": hashlib.sha256(body).hexdigest()}


# ----------------------------------------------------------------------------- utils: query string, loading


def test_query_string_becomes_parameters_as_stock_coerces_it(post, ours_urls) -> None:
    reply = ask(post, ours_urls["echo"], {"inputs": "x"}, query="a=0.5&b=-3&c=TRUE&d=7&d=8&e=12&t=true&f=false&F=False")
    assert reply.status == 200
    # only str.isnumeric() strings become ints, only lowercase true/false become bools, the last
    # value of a repeated key wins
    assert json.loads(reply.body) == {
        "inputs": "x",
        "parameters": {"a": "0.5", "b": "-3", "c": "TRUE", "d": 8, "e": 12, "t": True, "f": False, "F": "False"},
    }


def test_query_string_is_ignored_when_the_body_has_parameters(post, ours_urls) -> None:
    reply = ask(post, ours_urls["echo"], {"inputs": "x", "parameters": {"b": 2}}, query="a=1")
    assert json.loads(reply.body) == {"inputs": "x", "parameters": {"b": 2}}


def test_legacy_pipeline_with_a_sibling_module(post, ours_urls) -> None:
    reply = ask(post, ours_urls["legacy"], {"inputs": "test"})
    assert (reply.status, json.loads(reply.body)) == (200, {"reversed": "tset", "keys": ["inputs"]})


def test_handler_is_built_with_hf_model_dir_verbatim(post, ours_urls) -> None:
    reply = ask(post, ours_urls["cases"], {"inputs": "path"})
    assert json.loads(reply.body)["path"].endswith("/tests/stock/handlers/cases/")


# ----------------------------------------------------------------------------- handler and integration


def test_custom_handler_answers_the_payload_it_was_sent(post, ours_urls) -> None:
    payload = {"inputs": "this is a test"}
    reply = ask(post, ours_urls["echo"], payload)
    assert (reply.status, json.loads(reply.body)) == (200, payload)


def test_handler_spreading_data_into_keyword_arguments(post, ours_urls) -> None:
    reply = ask(post, ours_urls["run_kwargs"], {"inputs": "x"})
    assert (reply.status, json.loads(reply.body)) == (200, {"inputs": "x", "parameters": None})
    reply = post(ours_urls["run_kwargs"], image_bytes("PNG"), {"Content-Type": "image/png"})
    assert (reply.status, json.loads(reply.body)) == (200, {"inputs": "Image", "parameters": None})


@pytest.mark.parametrize(
    ("error", "message"),
    [
        ("ValueError", "bad input: ValueError from the handler"),
        ("KeyError", "'bad input: KeyError from the handler'"),
        ("RuntimeError", "bad input: RuntimeError from the handler"),
    ],
)
def test_what_a_handler_raises_is_a_400_with_its_message(post, ours_urls, error: str, message: str) -> None:
    reply = ask(post, ours_urls["cases"], {"inputs": f"raise:{error}"})
    assert (reply.status, reply.content_type) == (400, "application/json")
    assert json.loads(reply.body) == {"error": message}


#: The request form of every task the stock toolkit serves (its integration tests), JSON forms.
#: The request form of every task the stock toolkit serves (its integration tests), in one file for both
#: this module and the side-by-side matrix.
TASK_FORMS = json.loads((Path(__file__).parent / "task_forms.json").read_text())
TASK_JSON_FORMS: dict[str, dict] = TASK_FORMS["json"]


@pytest.mark.parametrize("task", list(TASK_JSON_FORMS))
def test_json_request_form_of_each_task_reaches_the_handler_unchanged(post, ours_urls, task: str) -> None:
    body = TASK_JSON_FORMS[task]
    reply = ask(post, ours_urls["describe"], body)
    assert reply.status == 200, reply.body
    seen = json.loads(reply.body)
    assert seen["keys"] == list(body)
    assert seen["data"] == body


@pytest.mark.parametrize("task", TASK_FORMS["image"])
def test_image_request_form_of_each_task(post, ours_urls, task: str) -> None:
    reply = post(ours_urls["describe"], image_bytes("JPEG", size=(32, 24)), {"Content-Type": "image/x-image"})
    assert reply.status == 200, reply.body
    seen = json.loads(reply.body)
    assert (seen["keys"], seen["types"]) == (["inputs"], {"inputs": "Image"})
    assert (seen["data"]["inputs"]["mode"], seen["data"]["inputs"]["size"]) == ("RGB", [32, 24])


@pytest.mark.parametrize("task", TASK_FORMS["audio"])
def test_audio_request_form_of_each_task(post, ours_urls, task: str) -> None:
    body = b"fLaC\x00\x00\x00\x22" + bytes(range(256)) * 4
    reply = post(ours_urls["describe"], body, {"Content-Type": "audio/x-audio"})
    assert reply.status == 200, reply.body
    seen = json.loads(reply.body)
    assert (seen["keys"], seen["data"]["inputs"]["len"]) == (["inputs"], len(body))


def test_text_to_image_request_form(post, ours_urls) -> None:
    form = TASK_FORMS["text-to-image"]
    reply = ask(post, ours_urls["cases"], {"inputs": form["inputs"]}, accept=form["accept"])
    assert (reply.status, reply.content_type) == (200, "image/png")
    image = Image.open(io.BytesIO(reply.body))
    assert (image.format, image.mode, image.size) == ("PNG", "RGB", (24, 16))
