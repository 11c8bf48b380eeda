"""decode_many / adecode_many: input order under concurrency, per-item failures, lazy inputs."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
import torch

from hf_remote_vae_toolkit.client import DecodeManyError, InvalidRequest, adecode_many, decode_many
from hf_remote_vae_toolkit.testing import running_server

PT = {"output_type": "pt", "return_type": "pt", "do_scaling": False, "retries": 0}


def latents(n: int) -> list[torch.Tensor]:
    return [torch.full((1, 4, 1, 1), float(i)) for i in range(n)]


@pytest.fixture(scope="module")
def indexed(toys):
    return toys.Indexed(fail_at=5)


@pytest.fixture(scope="module")
def indexed_url(indexed) -> Iterator[str]:
    with running_server(handler=indexed, max_batch_size=1) as url:
        yield url


def check_order(results: list, n: int, failed: int | None) -> None:
    assert len(results) == n
    for i, out in enumerate(results):
        if i != failed:
            assert torch.equal(out, torch.full((1, 3, 8, 8), float(i)))


def test_results_keep_input_order_under_concurrency(indexed, indexed_url: str) -> None:
    indexed.order.clear()
    results = decode_many(indexed_url, latents(5), concurrency=4, progress=False, **PT)  # item 5 would fail
    check_order(results, 5, None)
    assert sorted(indexed.order) == list(range(5))
    assert indexed.order != sorted(indexed.order)  # the server ran them out of order


def test_a_planted_failure_is_reported_per_item_and_the_rest_kept(indexed_url: str) -> None:
    with pytest.raises(DecodeManyError) as info:
        decode_many(indexed_url, latents(9), concurrency=3, progress=True, **PT)
    err = info.value
    assert set(err.errors) == {5} and isinstance(err.errors[5], InvalidRequest)
    assert "planted" in str(err) and err.results[5] is None
    check_order(err.results, 9, 5)

    results = decode_many(indexed_url, latents(9), concurrency=3, progress=False, return_exceptions=True, **PT)
    assert isinstance(results[5], InvalidRequest) and results[5].status_code == 400
    check_order(results, 9, 5)


def test_a_generator_is_consumed_while_earlier_items_decode(indexed_url: str) -> None:
    produced: list[int] = []

    def generate() -> Iterator[torch.Tensor]:
        for z in latents(4):
            produced.append(int(z.flatten()[0]))
            yield z

    results = decode_many(indexed_url, generate(), concurrency=2, progress=False, **PT)
    assert produced == [0, 1, 2, 3]
    check_order(results, 4, None)


def test_async_twin_keeps_order_and_reports_failures(indexed_url: str) -> None:
    async def main() -> list:
        async def agen():
            for z in latents(7):
                await asyncio.sleep(0)
                yield z

        first = await adecode_many(indexed_url, latents(5), concurrency=4, progress=False, **PT)
        check_order(first, 5, None)
        return await adecode_many(indexed_url, agen(), concurrency=3, progress=False, return_exceptions=True, **PT)

    results = asyncio.run(main())
    assert isinstance(results[5], InvalidRequest)
    check_order(results, 7, 5)


def test_async_twin_raises_decode_many_error(indexed_url: str) -> None:
    with pytest.raises(DecodeManyError) as info:
        asyncio.run(adecode_many(indexed_url, latents(6), concurrency=2, progress=False, **PT))
    assert set(info.value.errors) == {5}


def test_a_batch_tensor_is_refused_with_a_hint() -> None:
    with pytest.raises(TypeError, match="split"):
        decode_many("http://127.0.0.1:9", torch.zeros(2, 4, 8, 8), progress=False)
