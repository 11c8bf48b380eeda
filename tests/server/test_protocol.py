"""The shared wire-protocol module and settings, without a server."""

from __future__ import annotations

import pytest
import torch

from hf_remote_vae_toolkit import protocol
from hf_remote_vae_toolkit.errors import InvalidRequest, Overloaded, ServiceError, error_for_status
from hf_remote_vae_toolkit.settings import Settings


def test_query_round_trip_matches_requests_encoding() -> None:
    params = {"shape": [1, 4, 64, 64], "dtype": "float16", "do_scaling": True, "scaling_factor": 0.18215,
              "height": None, "image_format": "jpg", "partial_postprocess": False}  # fmt: skip
    pairs = protocol.encode_query(params)
    assert ("do_scaling", "True") in pairs and ("scaling_factor", "0.18215") in pairs
    assert all(k != "height" for k, _ in pairs)
    parsed = protocol.parse_query(pairs)
    assert parsed == {k: v for k, v in params.items() if v is not None}


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        ("TRUE", True),
        ("false", False),
        ("12", 12),
        ("-3", -3),
        ("1e-3", 1e-3),
        ("0.5", 0.5),
        ("jpg", "jpg"),
        ("1.2.3", "1.2.3"),
    ],
)
def test_coerce_value(raw: str, value: object) -> None:
    assert protocol.coerce_value(raw) == value and type(protocol.coerce_value(raw)) is type(value)


def test_single_shape_value_is_still_a_list() -> None:
    assert protocol.parse_query([("shape", "16")]) == {"shape": [16]}


def test_parse_accept_keeps_order_and_drops_refused() -> None:
    assert protocol.parse_accept("Image/PNG;q=0.5, tensor/binary, text/plain;q=0") == ["image/png", "tensor/binary"]


@pytest.mark.parametrize("dtype", list(protocol.DTYPES.values()))
def test_tensor_bytes_round_trip(dtype: torch.dtype) -> None:
    t = (torch.arange(24) % 7).to(dtype).reshape(2, 3, 4).permute(2, 0, 1)  # non-contiguous on purpose
    body = protocol.tensor_to_bytes(t)
    back = protocol.tensor_from_bytes(body, list(t.shape), protocol.dtype_name(dtype))
    assert torch.equal(back, t)
    back[0, 0, 0] = 1  # the tensor owns writable memory


def test_absurd_shape_costs_nothing() -> None:
    with pytest.raises(InvalidRequest, match="needs 2000000000000 bytes"):
        protocol.tensor_from_bytes(b"\0" * 16, [10**6, 10**6], "float16")


def test_error_tree_round_trips_status() -> None:
    err = error_for_status(429, "full", request_id="r1", retry_after=3)
    assert isinstance(err, Overloaded) and err.retry_after == 3 and "r1" in str(err)
    assert type(error_for_status(418, "teapot")) is ServiceError and error_for_status(418, "x").status_code == 418


def test_settings_from_env() -> None:
    s = Settings.from_env({"HF_MODEL_DIR": "/m", "PORT": "8080", "MAX_REQUEST_BYTES": "10", "API_TOKEN": "t",
                           "MAX_BATCH_SIZE": "0", "GPU_MEMORY_BUDGET_GB": "1.5", "HF_DEFAULT_PIPELINE_NAME": "h.py"})  # fmt: skip
    assert (s.model_dir, s.port, s.max_request_bytes, s.api_token) == ("/m", 8080, 10, "t")
    assert s.max_batch_size == 1 and s.gpu_memory_budget_gb == 1.5 and s.default_pipeline_name == "h.py"
    assert Settings.from_env({}).port == 5000 and Settings.from_env({}).host == "0.0.0.0"
    assert Settings.from_env({}).max_batch_size is None  # chosen by device: 8 on GPUs, 1 on a CPU
    assert Settings.from_env({"MAX_BATCH_SIZE": "4"}).max_batch_size == 4
    with pytest.raises(ValueError, match="PORT must be an integer"):
        Settings.from_env({"PORT": "http"})
