"""A request is parsed once, however many scheduler hooks look at it."""

from __future__ import annotations

from typing import Any

from hf_remote_vae_toolkit.vae.parsing import parsed_once


def test_parsed_once_keeps_the_job_in_the_request_dict() -> None:
    calls: list[Any] = []

    def parse(data: Any) -> str:
        calls.append(data)
        return f"job for {data['inputs']}"

    data: dict[str, Any] = {"inputs": 7}
    assert parsed_once(data, parse) == "job for 7"
    assert parsed_once(data, parse) == "job for 7"
    assert len(calls) == 1
    other: dict[str, Any] = {"inputs": 8}
    assert parsed_once(other, parse) == "job for 8" and len(calls) == 2
