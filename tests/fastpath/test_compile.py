"""VAE_COMPILE=1 on the CPU: the real ``torch.compile`` (inductor, a C compiler) on the tiniest model and shape,
served through the real server; compiled decodes equal eager ones, and a shape outside the warmed set runs
eagerly instead of compiling in a user's request."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from hf_remote_vae_toolkit.client import remote_decode
from hf_remote_vae_toolkit.testing import running_server

from .conftest import load_handler

SD_SCALING = 0.18215


def test_compile_is_set_up_per_part_and_auto_is_off_on_a_cpu(model_repo: Callable[[str], Path]) -> None:
    auto = load_handler(model_repo("sd-v1-decode"))
    assert auto.loaded.compiled == {} and auto.warmup_shapes == [(1, 4, 8, 8)]  # one small eager call
    forced = load_handler(model_repo("sd-v1-encode"), environ={"VAE_COMPILE": "1"})
    assert list(forced.loaded.compiled) == ["encoder"]
    # compiling and nothing named: the family's 512² and 1024² (compiled at warm-up, not at load)
    assert forced.warmup_shapes == [(1, 3, 512, 512), (1, 3, 1024, 1024)]
    assert forced.loaded.compiled["encoder"].warmed == set()


@pytest.mark.slow
def test_compiled_decodes_equal_eager_through_the_server(model_repo: Callable[[str], Path]) -> None:
    repo = model_repo("sd-v1-decode")
    eager = load_handler(repo, environ={"VAE_COMPILE": "0", "WARMUP_SHAPES": "1x4x8x8"})
    compiled = load_handler(repo, environ={"VAE_COMPILE": "1", "WARMUP_SHAPES": "1x4x8x8"})
    dispatch = compiled.loaded.compiled["decoder"]
    warmed = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    other = torch.randn(1, 4, 12, 12, generator=torch.Generator().manual_seed(1))
    with running_server(handler=compiled) as url:  # the warm-up compiles 1x4x8x8 before the port opens
        assert compiled.warmup_times[0]["mode"] == "compiled" and dispatch.calls == {"compiled": 1, "eager": 0}
        raw = remote_decode(url, warmed, output_type="pt", return_type="pt", scaling_factor=SD_SCALING)
        uint8 = remote_decode(url, warmed, output_type="pt", partial_postprocess=True, return_type="pt",
                              scaling_factor=SD_SCALING)  # fmt: skip
        assert dispatch.calls == {"compiled": 3, "eager": 0}
        raw_other = remote_decode(url, other, output_type="pt", return_type="pt", scaling_factor=SD_SCALING)
        assert dispatch.calls == {"compiled": 3, "eager": 1}  # not warmed: eager, no compile in the request
    params = {"output_type": "pt", "scaling_factor": SD_SCALING}
    ref = eager({"inputs": warmed, "parameters": params})
    ref_uint8 = eager({"inputs": warmed, "parameters": {**params, "partial_postprocess": True}})
    ref_other = eager({"inputs": other, "parameters": params})
    assert raw.shape == ref.shape == (1, 3, 64, 64)
    assert torch.allclose(raw, ref, atol=1e-4), (raw - ref).abs().max()
    assert (uint8.int() - ref_uint8.int()).abs().max() <= 1  # a rounding step apart at most
    assert torch.equal(raw_other, ref_other)  # the very same eager decoder
