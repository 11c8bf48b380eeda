"""The explicit steps of the image handlers: parse, batch_key, call_batch, estimate_memory, setup (the
memory budget, tiling), warmup; in process, and the tiled header over HTTP."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
import torch

from hf_remote_vae_toolkit import protocol
from hf_remote_vae_toolkit.contract import Output, RequestInfo, WorkerInfo
from hf_remote_vae_toolkit.errors import InvalidRequest
from hf_remote_vae_toolkit.testing import running_server
from hf_remote_vae_toolkit.vae.memory import estimate_decode_bytes

from .conftest import load_handler


@pytest.fixture(scope="module")
def decoder(model_repo: Callable[[str], Path]) -> Any:
    return load_handler(model_repo("sd-v1-decode"), environ={})


def request(z: torch.Tensor, **params: Any) -> dict[str, Any]:
    return {"inputs": z, "parameters": {"output_type": "pt", **params}}


def parse(handler: Any, data: dict[str, Any], accept: str | None = protocol.TENSOR_BINARY) -> Any:
    return handler.parse(data, RequestInfo(accept=accept, body_parameters=True))


def run(handler: Any, data: dict[str, Any], accept: str | None = protocol.TENSOR_BINARY) -> Any:
    return handler.call_batch([parse(handler, data, accept)])[0]


def test_parse_raises_before_any_work(decoder: Any) -> None:
    parse(decoder, request(torch.zeros(1, 4, 8, 8)))
    with pytest.raises(InvalidRequest, match=r"expected \[B, 4, h, w\]"):
        parse(decoder, request(torch.zeros(1, 3, 8, 8)))


def test_batch_key_groups_compatible_requests(decoder: Any) -> None:
    def key(data: dict[str, Any]) -> Any:
        return decoder.batch_key(parse(decoder, data))

    first = key(request(torch.zeros(1, 4, 8, 8)))
    assert first == key(request(torch.ones(2, 4, 8, 8)))  # batch size may differ
    assert first != key(request(torch.zeros(1, 4, 8, 16)))  # shape
    assert first != key(request(torch.zeros(1, 4, 8, 8, dtype=torch.float16)))  # dtype
    assert first != key(request(torch.zeros(1, 4, 8, 8), scaling_factor=0.5))  # scaling
    assert first != key(request(torch.zeros(1, 4, 8, 8), partial_postprocess=True))  # output kind
    hash(first)


def test_call_batch_equals_separate_calls_in_order(decoder: Any) -> None:
    gen = torch.Generator().manual_seed(0)
    batch = [request(torch.randn(n, 4, 8, 8, generator=gen), partial_postprocess=True) for n in (1, 2, 1)]
    outputs = decoder.call_batch([parse(decoder, data) for data in batch])
    assert [o.shape[0] for o in outputs] == [1, 2, 1]
    for data, out in zip(batch, outputs, strict=True):
        assert np.array_equal(out.numpy(), decoder(data).numpy())  # the stock __call__ path agrees


def test_image_outputs_carry_their_type(decoder: Any) -> None:
    out = run(decoder, request(torch.zeros(2, 4, 8, 8), output_type="pil", image_format="png"), accept=None)
    assert isinstance(out, Output) and out.media_type == protocol.IMAGE_PNG and out.value.size == (64, 64)
    jpeg = run(decoder, request(torch.zeros(1, 4, 8, 8), output_type="pil", jpeg_quality=90), protocol.IMAGE_JPEG)
    assert jpeg.media_type == protocol.IMAGE_JPEG and jpeg.encode_options == {"quality": 90}
    pil = run(decoder, request(torch.zeros(1, 4, 8, 8), output_type="pil"), accept=protocol.JSON)
    assert pil.size == (64, 64)


def test_estimate_memory_and_tiling(decoder: Any) -> None:
    z = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(1))
    untiled = estimate_decode_bytes(1, 128, 128, 4)
    assert decoder.estimate_memory(parse(decoder, request(z))) == untiled
    plain = run(decoder, request(z))
    decoder.setup(WorkerInfo(memory_budget_bytes=untiled - 1))  # the server's budget, handed over in setup
    try:
        assert decoder.estimate_memory(parse(decoder, request(z))) < untiled
        tiled = run(decoder, request(z))
    finally:
        decoder.memory_budget_bytes = None
    assert isinstance(tiled, Output) and tiled.headers == {protocol.HEADER_TILED: "1"}
    assert tiled.value.shape == plain.shape == (1, 3, 128, 128)
    with torch.no_grad():  # diffusers' own tiled decode, not an approximation of the untiled one
        assert torch.allclose(tiled.value, decoder.loaded.vae.tiled_decode(z).sample, atol=1e-6)


def test_warmup(decoder: Any, model_repo: Callable[[str], Path]) -> None:
    decoder.warmup()
    load_handler(model_repo("flux-encode"), environ={}).warmup()


def test_budget_from_env_tiles_over_http(model_repo: Callable[[str], Path]) -> None:
    old = os.environ.get("GPU_MEMORY_BUDGET_GB")
    os.environ["GPU_MEMORY_BUDGET_GB"] = "0.00001"  # ~10 KB: any decode is over it
    try:
        with running_server(model_repo("sd-v1-decode")) as url:
            z = torch.zeros(1, 4, 16, 16)
            r = requests.post(
                url,
                data=protocol.tensor_to_bytes(z),
                params={"shape": [1, 4, 16, 16], "dtype": "float32", "output_type": "pt"},
                headers={"Content-Type": protocol.TENSOR_BINARY, "Accept": protocol.TENSOR_BINARY},
                timeout=60,
            )
    finally:
        if old is None:
            os.environ.pop("GPU_MEMORY_BUDGET_GB", None)
        else:
            os.environ["GPU_MEMORY_BUDGET_GB"] = old
    assert r.status_code == 200, r.text
    assert r.headers[protocol.HEADER_TILED] == "1"
    assert protocol.tensor_from_response(r.content, r.headers).shape == (1, 3, 128, 128)
