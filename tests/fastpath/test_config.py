"""VAE_COMPILE and WARMUP_SHAPES: parsed once, typed, and every bad value is one clear error."""

from __future__ import annotations

import pytest

from hf_remote_vae_toolkit.vae.config import VaeConfig, parse_compile, parse_warmup_shapes


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (None, None),
        ("", None),
        ("auto", None),
        (" AUTO ", None),
        ("1", True),
        ("true", True),
        ("0", False),
        ("off", False),
    ],
)
def test_vae_compile_values(raw: str | None, expected: bool | None) -> None:
    assert parse_compile(raw) is expected


@pytest.mark.parametrize("raw", ["yes please", "2", "compile"])
def test_vae_compile_rejects_other_values(raw: str) -> None:
    with pytest.raises(ValueError, match="VAE_COMPILE must be auto, 1 or 0"):
        parse_compile(raw)


def test_warmup_shapes_parse_in_order_without_duplicates() -> None:
    assert parse_warmup_shapes("1x4x128x128, 1x16x128x128,1x4x128x128") == ((1, 4, 128, 128), (1, 16, 128, 128))
    assert parse_warmup_shapes("1x16x16x60x104") == ((1, 16, 16, 60, 104),)
    assert parse_warmup_shapes(None) is None and parse_warmup_shapes("  ") is None
    assert parse_warmup_shapes("none") == ()


@pytest.mark.parametrize("raw", ["1x4x128", "1x4x0x128", "1x4xbigx128", "128", "1x4x8x8x8x8", "-1x4x8x8"])
def test_warmup_shapes_reject_malformed_items(raw: str) -> None:
    with pytest.raises(ValueError, match="WARMUP_SHAPES must be comma-separated shapes"):
        parse_warmup_shapes(raw)


def test_from_env_reads_both_knobs() -> None:
    config = VaeConfig.from_env({"VAE_COMPILE": "1", "WARMUP_SHAPES": "2x4x64x64"})
    assert config.compile is True and config.warmup_shapes == ((2, 4, 64, 64),)
    default = VaeConfig.from_env({})
    assert default.compile is None and default.warmup_shapes is None
