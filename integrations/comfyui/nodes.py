"""ComfyUI nodes that decode and encode on a remote VAE endpoint (hf-remote-vae-toolkit's server, or any
server speaking diffusers' ``remote_decode`` protocol).

ComfyUI's types, as its own VAE nodes use them:

- ``LATENT`` is a dict whose ``samples`` tensor is in the VAE's own latent space: ComfyUI's samplers
  undo the model's latent format (``process_out``) before handing a latent on, and its VAE decodes
  ``samples`` as they are. So these nodes ask the endpoint for *no* scaling (``do_scaling=False``), and
  Remote VAE Encode returns the VAE's raw latents. Image latents are ``[B, C, h, w]`` (Flux unpacked,
  16 channels); video latents (HunyuanVideo, Wan) ``[B, C, T, h, w]``.
- ``IMAGE`` is float32 ``[B, H, W, C]`` in [0, 1] on the CPU; a video is its frames stacked on ``B``.

All HTTP goes through the toolkit's client (timeouts, retries with backoff on 429/502/503/504 and
connection errors, typed errors); a failure reaches the ComfyUI UI as one ``RemoteVAEError`` whose
message says what happened and what to do.
"""

from __future__ import annotations

import concurrent.futures as cf
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from hf_remote_vae_toolkit.client import (
    ClientConnectionError,
    ClientTimeout,
    DecodeManyError,
    InvalidRequest,
    NotReady,
    Overloaded,
    PayloadTooLarge,
    ServiceError,
    Unauthorized,
    decode_many,
    remote_encode,
)
from hf_remote_vae_toolkit.vae.families import FAMILIES, PREVIEW_OF, get_family

__all__ = [
    "NODE_CLASS_MAPPINGS",
    "NODE_DISPLAY_NAME_MAPPINGS",
    "RemoteVAEConfig",
    "RemoteVAEError",
    "RemoteVAELoader",
    "RemoteVAEDecode",
    "RemoteVAEEncode",
    "RemoteVAEDecodeVideo",
    "TOKEN_ENV",
]

#: Environment variable the loader reads when its ``token`` input is empty.
TOKEN_ENV = "HF_REMOTE_VAE_TOKEN"
CATEGORY = "latent/remote VAE"
#: The families a loader can name (the full VAEs; preview endpoints go in ``preview_endpoint``).
FAMILY_NAMES = [name for name in FAMILIES if name not in PREVIEW_OF]


class RemoteVAEError(RuntimeError):
    """A remote VAE call failed; the message is what the ComfyUI UI shows."""


@dataclass(frozen=True)
class RemoteVAEConfig:
    """What Remote VAE Loader hands the other nodes (the ``REMOTE_VAE`` type)."""

    endpoint: str
    family: str
    timeout: float = 310.0
    retries: int = 3
    concurrency: int = 4
    preview_endpoint: str | None = None
    encode_endpoint: str | None = None
    token: str | None = None  # None: the client's default (your HF token, for HF hosts and loopback only)

    def __repr__(self) -> str:  # never print the token
        return f"RemoteVAEConfig(endpoint={self.endpoint!r}, family={self.family!r})"

    def request_kwargs(self) -> dict[str, Any]:
        return {"timeout": (min(10.0, self.timeout), self.timeout), "retries": self.retries, "token": self.token}


# --------------------------------------------------------------------------- helpers


def _progress(total: int) -> Any:
    """ComfyUI's progress bar when running inside ComfyUI, else None."""
    try:
        from comfy.utils import ProgressBar  # type: ignore[import-not-found]
    except ImportError:
        return None
    return ProgressBar(total)


def _explain(exc: BaseException, endpoint: str, what: str, config: RemoteVAEConfig) -> RemoteVAEError:
    """One message a ComfyUI user can act on, for any failure of a remote call."""
    where = f"Remote VAE {what} at {endpoint}"
    said = getattr(exc, "message", None) or str(exc)
    if isinstance(exc, ClientTimeout):
        text = f"{where}: no answer within {config.timeout:g} s. Raise the loader's timeout, or send fewer latents."
    elif isinstance(exc, ClientConnectionError):
        text = (
            f"{where}: cannot reach the endpoint ({said}) after {config.retries} retries. Check the URL, and "
            "that the endpoint is running (a paused or scaled-to-zero Inference Endpoint takes minutes to start)."
        )
    elif isinstance(exc, Unauthorized):
        text = (
            f"{where}: 401, the endpoint wants a token ({said}). Set the {TOKEN_ENV} environment variable "
            "before starting ComfyUI, or fill the loader's token input (it is saved in the workflow)."
        )
    elif isinstance(exc, PayloadTooLarge):
        text = (
            f"{where}: 413, too large for the endpoint ({said}). Decode a smaller size or fewer frames, or "
            "raise the server's MAX_REQUEST_BYTES / GPU_MEMORY_BUDGET_GB."
        )
    elif isinstance(exc, Overloaded):
        text = (
            f"{where}: 429, the endpoint's queue is still full after {config.retries} retries ({said}). "
            "Try again later, lower the loader's concurrency, or raise its retries."
        )
    elif isinstance(exc, NotReady):
        text = f"{where}: 503, the endpoint is not ready ({said}). Wait for it to finish starting and try again."
    elif isinstance(exc, InvalidRequest):
        text = f"{where}: the endpoint refused the request: {said} (is the loader's family, {config.family}, right?)"
    elif isinstance(exc, ServiceError):
        text = f"{where}: {exc}"
    else:
        text = f"{where}: {type(exc).__name__}: {exc}"
    error = RemoteVAEError(text)
    error.__cause__ = exc
    return error


def _latent_samples(samples: Any, what: str) -> torch.Tensor:
    if not isinstance(samples, dict) or not isinstance(samples.get("samples"), torch.Tensor):
        raise RemoteVAEError(f"{what} expects a LATENT (a dict with a 'samples' tensor), got {type(samples).__name__}")
    return samples["samples"]


def _check_channels(z: torch.Tensor, config: RemoteVAEConfig, packed: bool) -> None:
    family = get_family(config.family)
    c = family.latent_channels
    got = z.shape[2] if packed else z.shape[1]
    want = 4 * c if packed else c
    if got != want:
        layout = f"[B, N, {want}]" if packed else f"[B, {c}, ...]"
        raise RemoteVAEError(
            f"the latent {list(z.shape)} does not fit the loader's family {family.name} ({layout}); "
            "pick the family of the model that made it in Remote VAE Loader"
        )


def _decode_items(
    endpoint: str, items: list[torch.Tensor], config: RemoteVAEConfig, what: str, **kwargs: Any
) -> list[Any]:
    """``decode_many`` over the items, ``concurrency`` at a time, advancing ComfyUI's progress bar."""
    bar = _progress(len(items))
    results: list[Any] = []
    step = max(1, config.concurrency)
    for start in range(0, len(items), step):
        chunk = items[start : start + step]
        try:
            results.extend(
                decode_many(
                    endpoint,
                    chunk,
                    concurrency=step,
                    progress=False,
                    desc=what,
                    do_scaling=False,  # a LATENT is in the VAE's own space: ComfyUI applied the latent format
                    **kwargs,
                    **config.request_kwargs(),
                )
            )
        except DecodeManyError as exc:
            first = min(exc.errors)
            raise _explain(exc.errors[first], endpoint, what, config) from None
        if bar is not None:
            bar.update(len(chunk))
    return results


def _to_image(result: torch.Tensor, uint8: bool) -> torch.Tensor:
    """A decode result -> IMAGE ``[N, H, W, 3]`` float32 in [0, 1] on the CPU.

    Raw results are ``[B, 3, H, W]`` (video ``[B, 3, F, H, W]``) in [-1, 1], mapped as ComfyUI maps its
    own VAE's output (``(x + 1) / 2``, clamped); uint8 results are ``[N, H, W, 3]``.
    """
    if uint8:
        return result.float().div(255.0)
    x = result.float()
    if x.ndim == 5:  # [B, 3, F, H, W] -> [B * F, 3, H, W]
        x = x.permute(0, 2, 1, 3, 4).reshape(-1, x.shape[1], x.shape[3], x.shape[4])
    return ((x + 1.0) / 2.0).clamp(0.0, 1.0).permute(0, 2, 3, 1).contiguous()


# --------------------------------------------------------------------------- nodes


class RemoteVAELoader:
    """Where the VAE is: endpoint URL, token, family, timeout; the other nodes take its REMOTE_VAE."""

    CATEGORY = CATEGORY
    FUNCTION = "load"
    RETURN_TYPES = ("REMOTE_VAE",)
    RETURN_NAMES = ("remote_vae",)
    DESCRIPTION = "A remote VAE endpoint (hf-remote-vae-toolkit or any diffusers remote_decode server)."

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "endpoint": ("STRING", {"default": "http://127.0.0.1:5000", "tooltip": "the decode endpoint's URL"}),
                "family": (FAMILY_NAMES, {"default": "sd-v1", "tooltip": "the VAE the endpoint serves"}),
                "timeout": ("FLOAT", {"default": 310.0, "min": 1.0, "max": 3600.0, "step": 1.0}),
                "retries": ("INT", {"default": 3, "min": 0, "max": 20}),
            },
            "optional": {
                "token": (
                    "STRING",
                    {"default": "", "tooltip": f"empty: ${TOKEN_ENV}, else your HF token (HF hosts only)"},
                ),
                "preview_endpoint": ("STRING", {"default": "", "tooltip": "a TAESD-class preview endpoint"}),
                "encode_endpoint": ("STRING", {"default": "", "tooltip": "an endpoint serving <family>-encode"}),
                "concurrency": ("INT", {"default": 4, "min": 1, "max": 64, "tooltip": "requests in flight"}),
            },
        }

    def load(
        self,
        endpoint: str,
        family: str,
        timeout: float = 310.0,
        retries: int = 3,
        token: str = "",
        preview_endpoint: str = "",
        encode_endpoint: str = "",
        concurrency: int = 4,
    ) -> tuple[RemoteVAEConfig]:
        urls = {"endpoint": endpoint, "preview_endpoint": preview_endpoint, "encode_endpoint": encode_endpoint}
        for name, url in urls.items():
            if url.strip() and not url.strip().startswith(("http://", "https://")):
                raise RemoteVAEError(f"{name} must be an http:// or https:// URL, got {url!r}")
        if not endpoint.strip():
            raise RemoteVAEError("endpoint is empty: give the URL of the remote VAE endpoint")
        try:
            family = get_family(family).name
        except ValueError as exc:
            raise RemoteVAEError(str(exc)) from None
        if family in PREVIEW_OF:
            raise RemoteVAEError(
                f"{family} is a preview VAE: give its URL as the preview_endpoint of a {PREVIEW_OF[family]} loader"
            )
        secret = token.strip() or os.environ.get(TOKEN_ENV, "").strip() or None
        config = RemoteVAEConfig(
            endpoint=endpoint.strip(),
            family=family,
            timeout=float(timeout),
            retries=int(retries),
            concurrency=int(concurrency),
            preview_endpoint=preview_endpoint.strip() or None,
            encode_endpoint=encode_endpoint.strip() or None,
            token=secret,
        )
        return (config,)


class RemoteVAEDecode:
    """LATENT -> IMAGE on the remote VAE (or its preview endpoint); one request per image, concurrently."""

    CATEGORY = CATEGORY
    FUNCTION = "decode"
    RETURN_TYPES = ("IMAGE",)
    DESCRIPTION = "Decodes a LATENT on a remote VAE. 'preview' asks the loader's preview endpoint (TAESD-class)."

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {"samples": ("LATENT",), "remote_vae": ("REMOTE_VAE",)},
            "optional": {
                "quality": (["full", "preview"], {"default": "full"}),
                "transfer": (["float", "uint8"], {"default": "float", "tooltip": "uint8: 4x less data, 8-bit"}),
                "width": ("INT", {"default": 0, "min": 0, "max": 16384, "step": 16, "tooltip": "packed latents only"}),
                "height": ("INT", {"default": 0, "min": 0, "max": 16384, "step": 16, "tooltip": "packed latents only"}),
            },
        }

    def decode(
        self,
        samples: dict[str, Any],
        remote_vae: RemoteVAEConfig,
        quality: str = "full",
        transfer: str = "float",
        width: int = 0,
        height: int = 0,
    ) -> tuple[torch.Tensor]:
        z = _latent_samples(samples, "Remote VAE Decode")
        if z.ndim == 5:
            raise RemoteVAEError(f"a 5-D video latent {list(z.shape)}: use Remote VAE Decode Video")
        if z.ndim not in (3, 4):
            raise RemoteVAEError(f"Remote VAE Decode takes [B, C, h, w] latents, got {list(z.shape)}")
        packed = z.ndim == 3
        if packed and not (width and height):
            raise RemoteVAEError(f"packed latents {list(z.shape)} need the width and height inputs (pixels)")
        _check_channels(z, remote_vae, packed)
        endpoint = remote_vae.endpoint
        if quality == "preview":
            if remote_vae.preview_endpoint is None:
                raise RemoteVAEError("quality=preview needs a preview_endpoint in Remote VAE Loader")
            endpoint = remote_vae.preview_endpoint
        uint8 = transfer == "uint8"
        extra: dict[str, Any] = {"height": height, "width": width} if packed else {}
        results = _decode_items(
            endpoint,
            list(z.detach().cpu().split(1)),
            remote_vae,
            "decode",
            output_type="pt",
            return_type="pt",
            partial_postprocess=uint8,
            **extra,
        )
        return (torch.cat([_to_image(r, uint8) for r in results]),)


class RemoteVAEDecodeVideo:
    """A 5-D video LATENT -> IMAGE frames (``[B * F, H, W, 3]``), and optionally an MP4 per video."""

    CATEGORY = CATEGORY
    FUNCTION = "decode"
    RETURN_TYPES = ("IMAGE", "STRING")
    RETURN_NAMES = ("frames", "mp4_paths")
    OUTPUT_NODE = True  # it may only save MP4s
    DESCRIPTION = "Decodes a video LATENT (HunyuanVideo, Wan) on a remote VAE into frames; can save MP4s."

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {"samples": ("LATENT",), "remote_vae": ("REMOTE_VAE",)},
            "optional": {
                "transfer": (["float", "uint8"], {"default": "float", "tooltip": "uint8: 4x less data, 8-bit"}),
                "save_mp4": ("BOOLEAN", {"default": False}),
                "fps": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 120.0, "tooltip": "0: the family's own"}),
                "filename_prefix": ("STRING", {"default": "remote_vae/video"}),
            },
        }

    def decode(
        self,
        samples: dict[str, Any],
        remote_vae: RemoteVAEConfig,
        transfer: str = "float",
        save_mp4: bool = False,
        fps: float = 0.0,
        filename_prefix: str = "remote_vae/video",
    ) -> tuple[torch.Tensor, str]:
        z = _latent_samples(samples, "Remote VAE Decode Video")
        family = get_family(remote_vae.family)
        if z.ndim != 5 or not family.video:
            raise RemoteVAEError(
                f"Remote VAE Decode Video takes a 5-D latent [B, C, T, h, w] for a video family "
                f"(hunyuanvideo, wan); got {list(z.shape)} with family {family.name}"
            )
        _check_channels(z, remote_vae, packed=False)
        uint8 = transfer == "uint8"
        results = _decode_items(
            remote_vae.endpoint,
            list(z.detach().cpu().split(1)),
            remote_vae,
            "video decode",
            output_type="pt",
            return_type="pt",
            partial_postprocess=uint8,
        )
        videos = [_to_image(r, uint8) for r in results]
        paths: list[str] = []
        if save_mp4:
            rate = fps or float(family.default_fps or 16)
            paths = [str(write_mp4(video, _next_path(filename_prefix), rate)) for video in videos]
        return (torch.cat(videos), "\n".join(paths))


class RemoteVAEEncode:
    """IMAGE -> LATENT on the loader's encode endpoint (the VAE's raw latents, as ComfyUI's VAE Encode)."""

    CATEGORY = CATEGORY
    FUNCTION = "encode"
    RETURN_TYPES = ("LATENT",)
    DESCRIPTION = "Encodes images on a remote VAE (the loader's encode_endpoint); crops to a multiple of 8."

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {"pixels": ("IMAGE",), "remote_vae": ("REMOTE_VAE",)},
            "optional": {
                "latent": (["mode", "sample"], {"default": "mode", "tooltip": "sample: a draw (seeded)"}),
                "seed": ("INT", {"default": 0, "min": 0, "max": 2**63 - 1}),
            },
        }

    def encode(
        self, pixels: torch.Tensor, remote_vae: RemoteVAEConfig, latent: str = "mode", seed: int = 0
    ) -> tuple[dict[str, torch.Tensor]]:
        if not isinstance(pixels, torch.Tensor) or pixels.ndim != 4:
            raise RemoteVAEError(
                f"Remote VAE Encode takes an IMAGE [B, H, W, C], got {getattr(pixels, 'shape', pixels)}"
            )
        endpoint = remote_vae.encode_endpoint
        if endpoint is None:
            raise RemoteVAEError(
                f"Remote VAE Encode needs an encode_endpoint in Remote VAE Loader (one serving {remote_vae.family}-encode)"
            )
        family = get_family(remote_vae.family)
        if family.video:
            raise RemoteVAEError(f"{family.name} endpoints decode only; there is no remote encode for video VAEs")
        images = crop_to_multiple(pixels[..., :3], family.spatial_factor)
        if images.shape[1] == 0 or images.shape[2] == 0:
            raise RemoteVAEError(f"an IMAGE of {pixels.shape[2]}x{pixels.shape[1]} is smaller than one latent pixel")
        batch = images.detach().cpu().float().permute(0, 3, 1, 2).contiguous()  # [B, 3, H, W] in [0, 1]
        sample = latent == "sample"

        def one(i: int) -> torch.Tensor:
            return remote_encode(
                endpoint,
                batch[i : i + 1],
                sample=sample,
                seed=seed + i if sample else None,
                value_range="0,1",
                **remote_vae.request_kwargs(),
            )

        bar = _progress(batch.shape[0])
        out: list[torch.Tensor] = [torch.empty(0)] * batch.shape[0]
        with cf.ThreadPoolExecutor(max_workers=max(1, remote_vae.concurrency)) as pool:
            futures = {pool.submit(one, i): i for i in range(batch.shape[0])}
            for future in cf.as_completed(futures):
                try:
                    out[futures[future]] = future.result()
                except Exception as exc:
                    for other in futures:
                        other.cancel()
                    raise _explain(exc, endpoint, "encode", remote_vae) from None
                if bar is not None:
                    bar.update(1)
        return ({"samples": torch.cat(out).float()},)


# --------------------------------------------------------------------------- pixels and files


def crop_to_multiple(pixels: torch.Tensor, factor: int) -> torch.Tensor:
    """Centre-crop ``[B, H, W, C]`` to multiples of ``factor``, as ComfyUI's VAE Encode does."""
    for dim in (1, 2):
        size = pixels.shape[dim]
        keep = (size // factor) * factor
        if keep != size:
            pixels = pixels.narrow(dim, (size % factor) // 2, keep)
    return pixels


def _output_dir() -> Path:
    try:
        import folder_paths  # type: ignore[import-not-found]  # ComfyUI's
    except ImportError:
        return Path.cwd() / "output"
    return Path(folder_paths.get_output_directory())


def _next_path(prefix: str, root: Callable[[], Path] = _output_dir) -> Path:
    base = root()
    stem = Path(prefix.strip() or "remote_vae/video")
    if stem.is_absolute() or ".." in stem.parts:
        raise RemoteVAEError(f"filename_prefix must stay inside ComfyUI's output directory, got {prefix!r}")
    folder = base / stem.parent
    folder.mkdir(parents=True, exist_ok=True)
    taken = {p.name for p in folder.glob(f"{stem.name}_*.mp4")}
    counter = 1
    while f"{stem.name}_{counter:05d}_.mp4" in taken:
        counter += 1
    return folder / f"{stem.name}_{counter:05d}_.mp4"


def write_mp4(frames: torch.Tensor, path: Path, fps: float) -> Path:
    """IMAGE frames ``[F, H, W, 3]`` in [0, 1] -> an H.264 (yuv420p) MP4 at ``path`` (needs PyAV)."""
    try:
        import av
    except ImportError:
        raise RemoteVAEError("save_mp4 needs PyAV: pip install av (in ComfyUI's Python)") from None
    from fractions import Fraction

    pixels = (frames.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    _, h, w, _ = pixels.shape
    h2, w2 = h - h % 2, w - w % 2  # yuv420p needs even sides
    with av.open(str(path), mode="w") as container:
        stream: Any = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = w2, h2, "yuv420p"
        for frame in pixels:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame[:h2, :w2], format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


NODE_CLASS_MAPPINGS = {
    "RemoteVAELoader": RemoteVAELoader,
    "RemoteVAEDecode": RemoteVAEDecode,
    "RemoteVAEEncode": RemoteVAEEncode,
    "RemoteVAEDecodeVideo": RemoteVAEDecodeVideo,
}

NODE_DISPLAY_NAME_MAPPINGS = {
    "RemoteVAELoader": "Remote VAE Loader",
    "RemoteVAEDecode": "Remote VAE Decode",
    "RemoteVAEEncode": "Remote VAE Encode",
    "RemoteVAEDecodeVideo": "Remote VAE Decode Video",
}
