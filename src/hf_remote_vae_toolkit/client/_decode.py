"""``remote_decode``: diffusers' function, same arguments and results, without its failure modes."""

from __future__ import annotations

import io
import warnings
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import requests
from PIL import Image

from ..protocol import IMAGE_JPEG, IMAGE_PNG, TENSOR_BINARY, TEXT_PLAIN
from ._arrays import Kind, array_bytes, array_from_response, is_array, kind_of, wire_dtype
from ._http import RetriesArg, TimeoutArg, TokenArg, post

if TYPE_CHECKING:
    import torch

__all__ = ["remote_decode", "decode", "prepare_decode"]

# diffusers' deprecation messages, word for word (diffusers.utils.remote_utils), so that code and
# tests written against diffusers see the same FutureWarnings from the drop-in.
_DO_SCALING_DEPRECATED = "`do_scaling` is deprecated, pass `scaling_factor` and `shift_factor` if required."
_BASE64_DEPRECATED = "{}='base64' is deprecated. Using `binary`."
_TENSOR_TYPES = ("binary", "base64")

_OUTPUT_TYPES = ("mp4", "pil", "pt")
_IMAGE_FORMATS = {"jpg": IMAGE_JPEG, "png": IMAGE_PNG}
_SIGNATURES = {b"\xff\xd8": "jpeg", b"\x89PNG\r\n\x1a\n": "png", b"GIF87a": "gif", b"GIF89a": "gif", b"BM": "bmp"}


def _is_processor(processor: Any) -> bool:
    if processor is None:
        return False
    from diffusers.image_processor import VaeImageProcessor
    from diffusers.video_processor import VideoProcessor

    return isinstance(processor, (VaeImageProcessor, VideoProcessor))


def _check(
    tensor: Any,
    processor: Any,
    output_type: str,
    return_type: str,
    image_format: str,
    partial_postprocess: bool,
    height: int | None,
    width: int | None,
) -> None:
    """Refuse, with a ``ValueError`` that names the fix, what the reference client sends wrong or crashes on."""
    if not is_array(tensor):
        raise TypeError(f"tensor must be a torch.Tensor or a numpy.ndarray, got {type(tensor).__name__}")
    wire_dtype(tensor)  # ValueError for a dtype the server cannot read (the reference sends it anyway)
    if output_type not in _OUTPUT_TYPES:
        raise ValueError(f"output_type must be one of {_OUTPUT_TYPES}, got {output_type!r}")
    if return_type not in _OUTPUT_TYPES:
        raise ValueError(f"return_type must be one of {_OUTPUT_TYPES}, got {return_type!r}")
    if image_format not in _IMAGE_FORMATS:
        raise ValueError(f"image_format must be one of {tuple(_IMAGE_FORMATS)}, got {image_format!r}")
    if tensor.ndim == 3 and (height is None or width is None):
        raise ValueError("packed (3-D) latents need both `height` and `width` (the output size in pixels)")
    if return_type == "mp4" and output_type != "mp4":
        raise ValueError(
            f"output_type={output_type!r} with return_type='mp4': MP4 bytes come only from output_type='mp4'"
        )
    if processor is not None and kind_of(tensor) == "numpy":
        raise TypeError("a `processor` works on torch tensors: pass the latents as a torch.Tensor")
    if output_type == "pt" and return_type == "pil" and not partial_postprocess and not _is_processor(processor):
        raise ValueError(
            "output_type='pt', return_type='pil' needs a `processor` (VaeImageProcessor or VideoProcessor) "
            "to turn the raw tensor into images, or partial_postprocess=True"
        )


def prepare_decode(
    tensor: torch.Tensor | np.ndarray,
    processor: Any = None,
    do_scaling: bool = True,
    scaling_factor: float | None = None,
    shift_factor: float | None = None,
    output_type: str = "pil",
    return_type: str = "pil",
    image_format: str = "jpg",
    partial_postprocess: bool = False,
    height: int | None = None,
    width: int | None = None,
) -> dict[str, Any]:
    """The request the reference client sends (same query, same ``Accept``), with contiguous tensor bytes.

    One addition: ``output_type="pil"``, ``return_type="pt"`` without a processor asks for the
    ``[0, 1]`` float tensor that the same call with a processor returns (the reference crashes).
    """
    params: dict[str, Any] = {
        "image_format": image_format,
        "output_type": output_type,
        "partial_postprocess": partial_postprocess,
        "shape": list(tensor.shape),
        "dtype": wire_dtype(tensor),
    }
    # The reference's rules, kept exactly: do_scaling=False means "already scaled", so explicit
    # factors are then not sent either; do_scaling without a scaling_factor asks for the model's own.
    if do_scaling and scaling_factor is not None:
        params["scaling_factor"] = scaling_factor
    if do_scaling and shift_factor is not None:
        params["shift_factor"] = shift_factor
    if do_scaling and scaling_factor is None:
        params["do_scaling"] = do_scaling
    if height is not None and width is not None:
        params["height"] = height
        params["width"] = width
    accept = TENSOR_BINARY
    if output_type == "pil" and processor is None and return_type == "pil":
        accept = _IMAGE_FORMATS[image_format]
    elif output_type == "mp4":
        accept = TEXT_PLAIN
    headers = {"Content-Type": TENSOR_BINARY, "Accept": accept}
    return {"data": array_bytes(tensor), "params": params, "headers": headers}


def _postprocess(
    response: requests.Response,
    processor: Any,
    output_type: str,
    return_type: str,
    partial_postprocess: bool,
    kind: Kind = "torch",
) -> Any:
    # Branches in the reference's order, each returning what the reference returns.
    if output_type == "mp4":
        return response.content
    if output_type == "pil" and processor is None and return_type == "pil":
        image = Image.open(io.BytesIO(response.content)).convert("RGB")
        image.format = next((v for k, v in _SIGNATURES.items() if response.content.startswith(k)), "unknown")
        return image
    tensor = array_from_response(response.content, response.headers, kind)
    if output_type == "pt":
        if partial_postprocess:
            if return_type == "pt":
                return tensor
            images = [Image.fromarray(np.asarray(image)) for image in tensor]  # uint8 [B|F, H, W, 3]
            return images[0] if len(images) == 1 else images
        if processor is None or return_type == "pt":
            return tensor
        from diffusers.video_processor import VideoProcessor

        if isinstance(processor, VideoProcessor):
            return processor.postprocess_video(tensor, output_type="pil")[0]
        return processor.postprocess(tensor, output_type="pil")[0]
    # output_type == "pil" with a tensor answer: float images in [0, 1], [B|F, 3, H, W]
    if return_type == "pt":
        return tensor
    floats = tensor.float().numpy() if kind == "torch" else tensor.astype(np.float32)
    pixels = (floats.transpose(0, 2, 3, 1) * 255).round().astype("uint8")
    return [Image.fromarray(image) for image in pixels]


def remote_decode(
    endpoint: str,
    tensor: torch.Tensor | np.ndarray,
    processor: Any = None,
    do_scaling: bool = True,
    scaling_factor: float | None = None,
    shift_factor: float | None = None,
    output_type: Literal["mp4", "pil", "pt"] = "pil",
    return_type: Literal["mp4", "pil", "pt"] = "pil",
    image_format: Literal["png", "jpg"] = "jpg",
    partial_postprocess: bool = False,
    input_tensor_type: Literal["binary", "base64"] = "binary",
    output_tensor_type: Literal["binary", "base64"] = "binary",
    height: int | None = None,
    width: int | None = None,
    *,
    timeout: TimeoutArg = None,
    retries: RetriesArg = 3,
    token: TokenArg = None,
    session: requests.Session | None = None,
) -> Any:
    """Decode latents on a remote VAE; a drop-in for ``diffusers.utils.remote_utils.remote_decode``.

    Positional and keyword arguments up to ``width`` mean what they mean in diffusers, and every
    combination diffusers handles returns the same value:

    - ``tensor``: latents, ``[B, C, h, w]`` (image), ``[B, N, 4C]`` (packed Flux layout, needs
      ``height``/``width`` in pixels) or ``[B, C, T, h, w]`` (video); float16, bfloat16, float32
      (or uint8). Any memory layout: the bytes sent are C-contiguous (the reference sends a
      non-contiguous tensor's storage order, i.e. the wrong latents). A ``numpy.ndarray`` works too
      (no torch needed: the light client install); tensor results then come back as numpy arrays.
    - ``output_type="pil"`` -> ``PIL.Image`` (RGB; ``.format`` is ``"jpeg"``/``"png"``); with a
      ``processor`` -> list of images (``return_type="pil"``) or the float ``[B|F, 3, H, W]`` tensor
      in ``[0, 1]`` (``return_type="pt"``, also without a processor here).
    - ``output_type="pt"`` -> raw decoder output ``[B, 3, H, W]`` (video ``[B, 3, F, H, W]``) in
      ``[-1, 1]``, model dtype; with ``partial_postprocess=True`` uint8 ``[B, H, W, 3]`` (video
      ``[F, H, W, 3]``), or images with ``return_type="pil"`` (one image when ``B == 1``).
    - ``output_type="mp4"`` -> MP4 file bytes, whatever ``return_type`` says: diffusers'
      HunyuanVideo examples call ``remote_decode(..., output_type="mp4")`` with the default
      ``return_type="pil"``, which diffusers' own client crashes on (``UnboundLocalError``).

    Warnings, as diffusers gives them: a ``FutureWarning`` for ``do_scaling=True`` without a
    ``scaling_factor`` (the default call: the server then applies the model's own factors, which
    still works) and for ``input_tensor_type`` / ``output_tensor_type="base64"`` (binary is used).

    ``ValueError`` before anything is sent (where the reference crashes or the server would refuse):
    ``return_type="mp4"`` with another ``output_type``, a dtype the server cannot read, packed
    latents with only one of ``height``/``width``.

    Keyword-only additions: ``timeout`` (seconds or ``(connect, read)``; default ``(10, 310)``,
    never unbounded), ``retries`` (int or ``Retry``; connection failures and 429/502/503/504 are
    retried with jittered exponential backoff, honouring ``Retry-After``), ``token`` (bearer token;
    see ``resolve_token`` for the default), ``session`` (a ``requests.Session`` to reuse connections).

    Raises a ``ServiceError`` subclass carrying ``status_code``, ``message`` and ``request_id``:
    the shared per-status classes (``InvalidRequest`` for 400, ``NotReady`` for 503, ...),
    ``ClientTimeout`` or ``ClientConnectionError``.
    """
    for name, value in (("input_tensor_type", input_tensor_type), ("output_tensor_type", output_tensor_type)):
        if value == "base64":
            warnings.warn(_BASE64_DEPRECATED.format(name), FutureWarning, stacklevel=2)
    _check(tensor, processor, output_type, return_type, image_format, partial_postprocess, height, width)
    if do_scaling and scaling_factor is None:
        warnings.warn(_DO_SCALING_DEPRECATED, FutureWarning, stacklevel=2)
    return decode(
        endpoint,
        tensor,
        processor,
        do_scaling,
        scaling_factor,
        shift_factor,
        output_type,
        return_type,
        image_format,
        partial_postprocess,
        input_tensor_type,
        output_tensor_type,
        height,
        width,
        timeout=timeout,
        retries=retries,
        token=token,
        session=session,
    )


def decode(
    endpoint: str,
    tensor: torch.Tensor | np.ndarray,
    processor: Any = None,
    do_scaling: bool = True,
    scaling_factor: float | None = None,
    shift_factor: float | None = None,
    output_type: Literal["mp4", "pil", "pt"] = "pil",
    return_type: Literal["mp4", "pil", "pt"] = "pil",
    image_format: Literal["png", "jpg"] = "jpg",
    partial_postprocess: bool = False,
    input_tensor_type: Literal["binary", "base64"] = "binary",
    output_tensor_type: Literal["binary", "base64"] = "binary",
    height: int | None = None,
    width: int | None = None,
    *,
    timeout: TimeoutArg = None,
    retries: RetriesArg = 3,
    token: TokenArg = None,
    session: requests.Session | None = None,
) -> Any:
    """``remote_decode`` without diffusers' deprecation warnings: what ``decode_many`` and the CLI
    call. ``do_scaling=True`` without factors is not deprecated here: it asks the server for the
    model's own scaling, the right default for latents straight out of a pipeline."""
    for name, value in (("input_tensor_type", input_tensor_type), ("output_tensor_type", output_tensor_type)):
        if value not in _TENSOR_TYPES:  # either way the transfer is binary, the only one the server speaks
            raise ValueError(f"{name} must be 'binary' (or the deprecated 'base64'), got {value!r}")
    _check(tensor, processor, output_type, return_type, image_format, partial_postprocess, height, width)
    request = prepare_decode(
        tensor,
        processor,
        do_scaling,
        scaling_factor,
        shift_factor,
        output_type,
        return_type,
        image_format,
        partial_postprocess,
        height,
        width,
    )
    response = post(endpoint, **request, timeout=timeout, retries=retries, token=token, session=session)
    return _postprocess(response, processor, output_type, return_type, partial_postprocess, kind_of(tensor))
