"""Image decode: a request -> a checked job -> one ``vae.decode`` (maybe for many jobs) -> outputs.

A ``DecodeJob`` is everything about one request that can be known without a GPU: the latent shape
(unpacked), the scaling, the output kind. Parsing it is the validation step; running jobs is the
GPU step. Output kinds (docs/protocol.md, image rows):

=========  =====================================================  ==================================
kind       what the client gets                                   chosen by
=========  =====================================================  ==================================
jpeg/png   the first image of the batch, encoded                  ``pil`` + Accept image/* (wins), or
                                                                  ``pil`` + ``image_format`` when
                                                                  Accept is open
unit       float ``[B, 3, H, W]`` in [0, 1], model dtype          ``pil`` + Accept tensor/*
raw        float ``[B, 3, H, W]`` in [-1, 1], model dtype         ``pt``
uint8      uint8 ``[B, H, W, 3]``                                 ``pt`` + ``partial_postprocess``
pil        the first image as a PIL image (JSON: base64 PNG)      ``pil`` + Accept application/json
=========  =====================================================  ==================================
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from .. import protocol
from ..contract import Output
from ..errors import InvalidRequest, NotAcceptable
from .fastpath import FastPath, Pending, input_format
from .latents import (
    Scaling,
    apply_decode_scaling,
    check_pixels,
    image_latent_shape,
    resolve_decode_scaling,
    unpack_latents,
)
from .loading import LoadedVAE
from .postprocess import to_pil_images, to_uint8, to_unit

__all__ = [
    "DecodeJob",
    "parse_decode",
    "run_decode",
    "decode_latents",
    "prepare_latents",
    "fastpath_for",
    "resolve",
    "OUTPUT_KINDS",
    "IMAGE_FORMATS",
]

_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32)

#: ``image_format`` values -> output kind (the diffusers client sends ``jpg`` or ``png``).
IMAGE_FORMATS = {"jpg": "jpeg", "jpeg": "jpeg", "png": "png", "webp": "webp"}
_IMAGE_ACCEPT = {protocol.IMAGE_JPEG: "jpeg", protocol.IMAGE_PNG: "png", protocol.IMAGE_WEBP: "webp"}
_TENSOR_ACCEPT = (protocol.TENSOR_BINARY, protocol.TENSOR_BASE64)

_VALID = (
    "valid for an image VAE: output_type=pil with Accept image/jpeg or image/png (or image_format=jpg|png), "
    "output_type=pil with Accept tensor/binary (float images in [0, 1]), output_type=pt with Accept "
    "tensor/binary (raw [-1, 1], or uint8 with partial_postprocess=true)"
)


@dataclass(frozen=True)
class DecodeJob:
    """One decode request, checked. ``latents`` is on the CPU as received (3-D when packed)."""

    latents: torch.Tensor
    shape: tuple[int, int, int, int]  # unpacked [B, C, h, w]
    packed: bool
    height: int | None
    width: int | None
    scaling: Scaling
    kind: str
    jpeg_quality: int

    @property
    def key(self) -> tuple[Any, ...]:
        """Jobs with equal keys decode in one call: same latent shape, dtype, scaling and output kind."""
        return (self.shape[1:], self.latents.dtype, self.scaling, self.kind, self.jpeg_quality)


def _flag(params: Mapping[str, Any], key: str, default: bool) -> bool:
    value = params.get(key, default)
    if not isinstance(value, bool):
        raise InvalidRequest(f"{key} must be true or false, got {value!r}")
    return value


def _output_kind(params: Mapping[str, Any], accept: str | None, model: str) -> str:
    output_type = str(params.get("output_type", "pil")).lower()
    partial = _flag(params, "partial_postprocess", False)
    if output_type == "mp4":
        raise InvalidRequest(f"output_type=mp4 needs a video VAE, and {model} is an image VAE; {_VALID}")
    if output_type not in ("pil", "pt"):
        raise InvalidRequest(f"unknown output_type {output_type!r}; {_VALID}")
    if accept in (protocol.TEXT_PLAIN, protocol.VIDEO_MP4):
        raise InvalidRequest(f"Accept {accept} is for mp4 from a video VAE; {_VALID}")
    if accept not in (None, protocol.JSON, *_IMAGE_ACCEPT, *_TENSOR_ACCEPT):
        raise NotAcceptable(f"an image VAE cannot answer with {accept}; {_VALID}")
    if output_type == "pt":
        if accept in _IMAGE_ACCEPT:
            raise InvalidRequest(f"output_type=pt returns a tensor, not {accept}; {_VALID}")
        return "uint8" if partial else "raw"
    if accept in _IMAGE_ACCEPT:
        return _IMAGE_ACCEPT[accept]  # the Accept header wins over image_format
    if accept in _TENSOR_ACCEPT:
        return "unit"
    if accept == protocol.JSON:
        return "pil"
    fmt = str(params.get("image_format", "jpg")).lower()
    if fmt not in IMAGE_FORMATS:
        raise InvalidRequest(f"unknown image_format {fmt!r}; expected one of {sorted(IMAGE_FORMATS)}")
    return IMAGE_FORMATS[fmt]


def _jpeg_quality(params: Mapping[str, Any]) -> int:
    value = params.get("jpeg_quality", 75)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 100:
        raise InvalidRequest(f"jpeg_quality must be an integer from 1 to 100, got {value!r}")
    return value


def _legacy_tensor(inputs: str, params: Mapping[str, Any]) -> torch.Tensor:
    """JSON v0 (docs/protocol.md): base64 of raw bytes, ``shape``/``dtype`` in ``parameters``."""
    if "shape" not in params or "dtype" not in params:
        raise InvalidRequest("a base64 tensor in JSON needs parameters.shape and parameters.dtype")
    try:
        raw = base64.b64decode(inputs, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest("inputs is not valid base64 of raw tensor bytes") from None
    return protocol.tensor_from_bytes(raw, params["shape"], params["dtype"])


def parse_decode(
    inputs: Any, params: Mapping[str, Any], accept: str | None, loaded: LoadedVAE, max_pixels: int
) -> DecodeJob:
    """Check a decode request for an image VAE (``params`` typed, ``accept`` negotiated); no tensor touches a
    device. Raises ``InvalidRequest``."""
    if isinstance(inputs, str):
        latents = _legacy_tensor(inputs, params)
        if "do_scaling" not in params:  # JSON v0 clients expect the model's own normalisation
            params = {**params, "do_scaling": True}
    elif isinstance(inputs, torch.Tensor):
        latents = inputs
    else:
        raise InvalidRequest(
            "decode expects a latent tensor: a tensor/binary body with shape and dtype in the query, "
            f"got {type(inputs).__name__}"
        )
    if latents.dtype not in _FLOAT_DTYPES:
        raise InvalidRequest(f"latents must be float16, bfloat16 or float32, got {protocol.dtype_name(latents.dtype)}")
    shape, packed = image_latent_shape(tuple(latents.shape), params, loaded)
    factor = loaded.family.spatial_factor
    check_pixels(shape[0], shape[2] * factor, shape[3] * factor, max_pixels, what="decoded image")
    return DecodeJob(
        latents=latents,
        shape=shape,
        packed=packed,
        height=params.get("height") if packed else None,
        width=params.get("width") if packed else None,
        scaling=resolve_decode_scaling(params, loaded),
        kind=_output_kind(params, accept, loaded.family.name),
        jpeg_quality=_jpeg_quality(params),
    )


def prepare_latents(job: DecodeJob, loaded: LoadedVAE, fast: FastPath | None = None) -> torch.Tensor:
    """Latents on the device (pinned and ``non_blocking`` on CUDA), unpacked and de-normalised (in float32),
    then in the model dtype."""
    fast = fast or fastpath_for(loaded)
    z = fast.to_device(job.latents).float()
    if job.packed:
        assert job.height is not None and job.width is not None
        z = unpack_latents(z, job.height, job.width)
    return apply_decode_scaling(z, job.scaling).to(loaded.dtype)


def fastpath_for(loaded: LoadedVAE) -> FastPath:
    """The ``FastPath`` (transfers, device JPEG) of ``loaded``'s device, made on first use."""
    if loaded.fastpath is None:
        loaded.fastpath = FastPath(loaded.device)
    fast: FastPath = loaded.fastpath
    return fast


def _pil(images: torch.Tensor) -> Any:
    return to_pil_images(images[:1])[0]


def _image_output(x: torch.Tensor, job: DecodeJob, fast: FastPath) -> Any:
    """An image kind: uint8 on the device, then JPEG bytes encoded there (when it can), else the first image's
    pixels copied to the host for the server's encoders (PIL image, with its type)."""
    images = to_uint8(x[:1])
    if job.kind == "jpeg":
        pending = fast.jpeg_on_device(images, job.jpeg_quality)
        if pending is not None:
            return Output(fast.result(pending), media_type=protocol.IMAGE_JPEG)
    host = fast.result(fast.to_host(images, then=_pil))
    if job.kind == "pil":
        return Output(host) if isinstance(host, Pending) else host
    # images go back as PIL with their type: the server encodes them in its own thread pool (media.py's
    # encoders, with the job's jpeg_quality), so JPEG/PNG encoding never holds up the GPU worker
    options = {"quality": job.jpeg_quality} if job.kind == "jpeg" else {}
    return Output(host, media_type=_IMAGE_TYPES[job.kind], encode_options=options)


_IMAGE_TYPES = {"jpeg": protocol.IMAGE_JPEG, "png": protocol.IMAGE_PNG, "webp": protocol.IMAGE_WEBP}


def _tensor_output(x: torch.Tensor, fast: FastPath) -> Any:
    host = fast.result(fast.to_host(x))
    return Output(host) if isinstance(host, Pending) else host


#: Output kind -> finisher: raw decoder output of one job (device, model dtype) -> handler result. On a device
#: that defers (CUDA), a result's value is a ``fastpath.Pending`` (a copy or a device JPEG encode in flight),
#: wrapped in an ``Output`` whose ``finish`` waits for it in the server's thread pool.
OUTPUT_KINDS: dict[str, Callable[[torch.Tensor, DecodeJob, FastPath], Any]] = {
    "raw": lambda x, job, fast: _tensor_output(x, fast),
    "unit": lambda x, job, fast: _tensor_output(to_unit(x), fast),
    "uint8": lambda x, job, fast: _tensor_output(to_uint8(x), fast),
    "pil": _image_output,
    "jpeg": _image_output,
    "png": _image_output,
    "webp": _image_output,
}


def _finish_pending(result: Any) -> Any:
    """A deferred result gets ``finish``: wait for its device work (in the server's thread pool)."""
    if isinstance(result, Output) and isinstance(result.value, Pending):
        result.finish = Pending.wait
    return result


def resolve(result: Any) -> Any:
    """A result as the stock ``handler(data)`` call returns it: device work waited for, a bare value unless it
    carries a type or headers."""
    if not (isinstance(result, Output) and isinstance(result.value, Pending)):
        return result
    value = result.value.wait()
    if result.media_type is None and not result.headers:
        return value
    return Output(value, headers=result.headers, media_type=result.media_type, encode_options=result.encode_options)


def decode_latents(z: torch.Tensor, loaded: LoadedVAE, *, tiled: bool = False) -> torch.Tensor:
    """``vae.decode`` (or ``tiled_decode``) of device latents in the layout the weights have."""
    z = input_format(z, loaded.device) if loaded.tuned else z
    with torch.inference_mode():
        return loaded.vae.tiled_decode(z).sample if tiled else loaded.vae.decode(z).sample


def run_decode(
    jobs: list[DecodeJob], loaded: LoadedVAE, *, tiled: bool = False, fast: FastPath | None = None
) -> list[Any]:
    """Decode jobs of one batch key in one call; one result per job, in order.

    With ``tiled`` the decode goes through diffusers' ``tiled_decode`` (less memory, slower, not
    bit-equal to the untiled result) and every result carries ``X-Tiled: 1``. ``fast``: the worker's
    transfers (default: ``fastpath_for(loaded)``); when it defers, results wait for their copies in ``finish``.
    """
    fast = fast or fastpath_for(loaded)
    z = (
        torch.cat([prepare_latents(job, loaded, fast) for job in jobs])
        if len(jobs) > 1
        else prepare_latents(jobs[0], loaded, fast)
    )
    x = decode_latents(z, loaded, tiled=tiled)
    with torch.inference_mode():
        results: list[Any] = []
        start = 0
        for job in jobs:
            part = x[start : start + job.shape[0]]
            start += job.shape[0]
            results.append(_finish_pending(OUTPUT_KINDS[job.kind](part, job, fast)))
    if tiled:
        results = [_with_header(r, protocol.HEADER_TILED, "1") for r in results]
    return results


def _with_header(result: Any, name: str, value: str) -> Output:
    if isinstance(result, Output):
        result.headers[name] = value
        return result
    return Output(result, headers={name: value})
