"""``RemoteVAE``: a stand-in for a pipeline's ``vae`` that decodes on a remote endpoint."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any, Literal

import requests
import torch
from PIL import Image

from ..vae.families import PREVIEW_OF, get_family
from ._decode import remote_decode
from ._encode import remote_encode
from ._http import RetriesArg, TimeoutArg, TokenArg, new_session

__all__ = ["RemoteLatentDistribution", "RemoteVAE"]


class RemoteVAE:
    """Decode a diffusers pipeline's latents on a remote VAE endpoint; no VAE on the local device.

    ``pipe.vae = RemoteVAE("https://...", family="sd-v1")`` (or ``vae=RemoteVAE(...)`` in the
    pipeline's constructor), then ``pipe(...).images`` works as with a local VAE.

    Supported, and tested: ``StableDiffusionPipeline`` text-to-image, every ``output_type`` except
    ``"latent"`` (which never touches the VAE), with ``safety_checker=None``. The pipeline reads
    ``vae.config.block_out_channels`` (for ``vae_scale_factor``) and ``vae.config.scaling_factor``,
    divides the latents by it, and calls ``vae.decode(latents, return_dict=False, generator=...)``;
    this class answers those with the family's numbers (``vae.families``) and a remote
    ``output_type="pt"`` decode with no remote scaling.

    Expected to work, not tested here: other pipelines whose only VAE use is that same call on
    already de-normalised latents (SDXL text-to-image with ``force_upcast`` irrelevant, since
    ``config.force_upcast`` is False; Flux, which unpacks and shifts before ``decode``).

    Encoding (img2img): give ``encode_endpoint`` (an endpoint serving the same family's encode
    handler) and ``vae.encode(x)`` sends ``x`` (``[B, 3, H, W]`` in [-1, 1], as pipelines preprocess
    it) there. ``.latent_dist.mode()`` is the remote mode (equal to a local encode's, tested with
    ``StableDiffusionImg2ImgPipeline``); ``.latent_dist.sample(generator)`` is a remote draw seeded
    from ``generator.initial_seed()``: reproducible, but not the draw a local VAE would make with
    that generator. Without ``encode_endpoint``, ``encode`` raises ``NotImplementedError``.

    Previews (a TAESD-class endpoint, ``custom_handlers/taesd-decode`` and friends): give
    ``preview_endpoint`` and ``vae.preview(latents)`` decodes a pipeline's latents there, as they are
    during sampling (still normalised; Flux packed latents need ``height``/``width``), into PIL images;
    ``pipe(..., callback_on_step_end=vae.preview_callback(show))`` calls ``show(step, images)`` every
    ``every`` steps. The preview endpoint gets the family's scaling factors, as the full one would, and
    maps them onto its own latent space.

    Not supported: tiling/slicing switches (the server decides;
    the ``enable_*`` methods are accepted and do nothing), and pipeline offload hooks (this is not a
    ``torch.nn.Module``, so ``pipe.to(...)``, ``pipe.device`` and CPU offload ignore it).

    ``decode`` takes ``z``: de-normalised latents ``[B, C, h, w]`` (video ``[B, C, T, h, w]``),
    any float dtype and device; returns the decoder output in ``[-1, 1]``, ``[B, 3, 8h, 8w]``
    (video ``[B, 3, F, H, W]``), in ``z``'s dtype and on ``z``'s device. With ``transfer="uint8"``
    the server sends uint8 pixels (half of fp16, a quarter of fp32), and the output is
    ``u8 / 127.5 - 1``: PIL and numpy pipeline outputs are then identical to ``"raw"``, while
    ``output_type="pt"`` is quantised to 256 levels.
    """

    def __init__(
        self,
        endpoint: str,
        family: str = "sd-v1",
        *,
        transfer: Literal["raw", "uint8"] = "raw",
        encode_endpoint: str | None = None,
        preview_endpoint: str | None = None,
        timeout: TimeoutArg = None,
        retries: RetriesArg = 3,
        token: TokenArg = None,
        session: requests.Session | None = None,
    ) -> None:
        from diffusers.configuration_utils import FrozenDict

        if transfer not in ("raw", "uint8"):
            raise ValueError(f"transfer must be 'raw' or 'uint8', got {transfer!r}")
        fam = get_family(family)
        if fam.name in PREVIEW_OF:  # a preview endpoint reads the full family's requests, so name that family
            full = PREVIEW_OF[fam.name]
            raise ValueError(
                f"{fam.name} is a preview VAE: use RemoteVAE(full_url, family={full!r}, preview_endpoint=preview_url), "
                f"or RemoteVAE(preview_url, family={full!r}) to decode every image with {fam.name}"
            )
        self.endpoint = endpoint
        self.encode_endpoint = encode_endpoint
        self.preview_endpoint = preview_endpoint
        self.family = fam
        self.transfer = transfer
        self._request: dict[str, Any] = {"timeout": timeout, "retries": retries, "token": token}
        self._session = session if session is not None else new_session()
        # Pipelines compute vae_scale_factor = 2 ** (len(block_out_channels) - 1); only the length matters.
        levels = int(math.log2(fam.spatial_factor)) + 1
        self.config = FrozenDict(
            block_out_channels=[0] * levels,
            latent_channels=fam.latent_channels,
            scaling_factor=fam.scaling_factor if fam.scaling_factor is not None else 1.0,
            shift_factor=fam.shift_factor,
            latents_mean=fam.latents_mean,
            latents_std=fam.latents_std,
            force_upcast=False,
        )

    # Pipelines and helpers probe these on a VAE; a remote one has no local parameters.
    dtype = torch.float32
    device = torch.device("cpu")

    def __repr__(self) -> str:
        return f"RemoteVAE({self.endpoint!r}, family={self.family.name!r}, transfer={self.transfer!r})"

    def decode(self, z: torch.Tensor, return_dict: bool = True, generator: Any = None) -> Any:
        """Decode de-normalised latents remotely (see the class docstring for layout and range)."""
        del generator  # a VAE decode is deterministic; the remote one has nothing to seed
        uint8 = self.transfer == "uint8"
        out = remote_decode(
            self.endpoint,
            z,
            do_scaling=False,  # the pipeline already divided by scaling_factor (and added shift_factor)
            output_type="pt",
            return_type="pt",
            partial_postprocess=uint8,
            session=self._session,
            **self._request,
        )
        if uint8:
            # uint8 [B, H, W, 3] (video: [F, H, W, 3] of the first item) back to the raw layout in [-1, 1]
            out = out.float() / 127.5 - 1.0
            out = out.permute(0, 3, 1, 2) if z.ndim == 4 else out.permute(3, 0, 1, 2).unsqueeze(0)
        sample = out.to(device=z.device, dtype=z.dtype)
        if not return_dict:
            return (sample,)
        from diffusers.models.autoencoders.vae import DecoderOutput

        return DecoderOutput(sample=sample)

    def iter_frames(self, z: torch.Tensor) -> Iterator[torch.Tensor]:
        """Video latents ``[B, C, T, h, w]`` (de-normalised, as ``decode`` takes them) -> uint8 ``[H, W, 3]``
        frames of the first item, each handed over as soon as the server has decoded it (a streamed decode:
        ``client.streaming``). Stopping early closes the connection and the server stops decoding."""
        from .streaming import iter_decode_frames

        latents = z.detach().cpu()
        for frame in iter_decode_frames(
            self.endpoint, latents, do_scaling=False, session=self._session, **self._request
        ):
            yield torch.from_numpy(frame)

    def encode(self, x: torch.Tensor, return_dict: bool = True) -> Any:
        """Images ``[B, 3, H, W]`` in [-1, 1] -> an object with ``latent_dist`` (see the class docstring)."""
        if self.encode_endpoint is None:
            raise NotImplementedError(
                "this RemoteVAE has no encode_endpoint; pass RemoteVAE(..., encode_endpoint=URL) or use "
                "hf_remote_vae_toolkit.client.remote_encode"
            )
        dist = RemoteLatentDistribution(self, x)
        if not return_dict:
            return (dist,)
        from diffusers.models.modeling_outputs import AutoencoderKLOutput

        return AutoencoderKLOutput(latent_dist=dist)  # type: ignore[arg-type]

    def _encode(self, x: torch.Tensor, *, sample: bool, seed: int | None) -> torch.Tensor:
        assert self.encode_endpoint is not None
        z = remote_encode(
            self.encode_endpoint,
            x,
            sample=sample,
            seed=seed,
            value_range="-1,1",  # pipelines hand the VAE preprocessed images in [-1, 1]
            session=self._session,
            **self._request,
        )
        return z.to(device=x.device, dtype=x.dtype)

    def preview(
        self, latents: torch.Tensor, *, height: int | None = None, width: int | None = None
    ) -> list[Image.Image]:
        """A pipeline's latents (as during sampling, before the pipeline's own de-normalisation) -> one quick
        PIL image per batch item, from ``preview_endpoint``. Packed (3-D Flux) latents need ``height``/``width``."""
        if self.preview_endpoint is None:
            raise ValueError("this RemoteVAE has no preview_endpoint; pass RemoteVAE(..., preview_endpoint=URL)")
        fam = self.family
        scaling: dict[str, Any] = (
            {"scaling_factor": fam.scaling_factor, "shift_factor": fam.shift_factor}
            if fam.scaling_factor is not None
            else {"do_scaling": True}  # per-channel statistics: the endpoint's own
        )
        pixels = remote_decode(
            self.preview_endpoint,
            latents.detach().cpu(),
            output_type="pt",
            return_type="pt",
            partial_postprocess=True,  # uint8 [B, H, W, 3]: the smallest transfer, all a preview needs
            height=height,
            width=width,
            session=self._session,
            **scaling,
            **self._request,
        )
        return [Image.fromarray(frame.numpy()) for frame in pixels]

    def preview_callback(
        self, show: Callable[[int, list[Image.Image]], Any], *, every: int = 1, **preview_kwargs: Any
    ) -> Callable[..., dict[str, Any]]:
        """A ``callback_on_step_end`` for diffusers pipelines: ``show(step, images)`` every ``every`` steps."""
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")

        def callback(pipe: Any, step: int, timestep: Any, callback_kwargs: dict[str, Any]) -> dict[str, Any]:
            if step % every == 0:
                show(step, self.preview(callback_kwargs["latents"], **preview_kwargs))
            return {}

        return callback

    def to(self, *args: Any, **kwargs: Any) -> RemoteVAE:
        return self  # nothing local to move

    def enable_tiling(self, *args: Any, **kwargs: Any) -> None:
        """Accepted for compatibility; the server tiles when a request would not fit its memory."""

    disable_tiling = enable_slicing = disable_slicing = enable_tiling


class RemoteLatentDistribution:
    """What pipelines read from ``vae.encode(x).latent_dist``: ``mode()`` and ``sample(generator)``,
    each one remote encode (latents ``[B, C, H/8, W/8]``, un-normalised, in ``x``'s dtype and device)."""

    def __init__(self, vae: RemoteVAE, x: torch.Tensor) -> None:
        self._vae = vae
        self._x = x

    def mode(self) -> torch.Tensor:
        return self._vae._encode(self._x, sample=False, seed=None)

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        seed = generator.initial_seed() if generator is not None else None
        return self._vae._encode(self._x, sample=True, seed=seed)
