"""The VAE families we serve, in one registry (docs/protocol.md).

A family says which diffusers class to load, the latent layout it expects, its latent
normalisation, the dtype it runs in on a GPU, and two configs to build it with random weights:
``full`` (the real architecture) and ``tiny`` (same latent channels, scaling factors and 8x
spatial / 4x temporal factors, few channels: fast enough for tests on a CPU).

The weights' own ``config.json`` overrides the numbers here when a model is loaded.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Family", "FAMILIES", "PREVIEW_OF", "get_family", "WAN_LATENTS_MEAN", "WAN_LATENTS_STD"]

# Wan 2.1's per-channel latent statistics (diffusers' AutoencoderKLWan defaults).
WAN_LATENTS_MEAN = [
    -0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
    0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921,
]  # fmt: skip
WAN_LATENTS_STD = [
    2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
    3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.916,
]  # fmt: skip


def _sd_like(latent_channels: int, quant: bool, scaling: float, shift: float | None, sample: int) -> dict[str, Any]:
    cfg: dict[str, Any] = dict(
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 4,
        up_block_types=["UpDecoderBlock2D"] * 4,
        block_out_channels=[128, 256, 512, 512],
        layers_per_block=2,
        latent_channels=latent_channels,
        norm_num_groups=32,
        sample_size=sample,
        scaling_factor=scaling,
        use_quant_conv=quant,
        use_post_quant_conv=quant,
    )
    if shift is not None:
        cfg["shift_factor"] = shift
    return cfg


def _sd_tiny(full: dict[str, Any]) -> dict[str, Any]:
    # Four blocks keep the 8x factor (three down-samplings); 8..16 channels keep it fast.
    return {
        **full,
        "block_out_channels": [8, 8, 16, 16],
        "layers_per_block": 1,
        "norm_num_groups": 4,
        "sample_size": 64,
    }


@dataclass(frozen=True)
class Family:
    """One VAE family. Tensor layouts: image latents ``[B, C, h, w]``, video ``[B, C, T, h, w]``."""

    name: str
    class_name: str  # attribute of ``diffusers``
    latent_channels: int
    scaling_factor: float | None
    shift_factor: float | None
    cuda_dtype: str  # "float16" | "bfloat16" | "float32"
    hub_id: str  # the weights the reference service was deployed with
    subfolder: str | None
    full_config: dict[str, Any]
    tiny_config: dict[str, Any]
    video: bool = False
    spatial_factor: int = 8
    temporal_factor: int = 1
    default_fps: int | None = None
    packed: bool = False  # accepts 3-D packed latents (Flux layout)
    latents_mean: list[float] | None = None
    latents_std: list[float] | None = None
    aliases: tuple[str, ...] = field(default_factory=tuple)

    def vae_class(self) -> Callable[..., Any]:
        import diffusers

        return getattr(diffusers, self.class_name)

    def config(self, size: str) -> dict[str, Any]:
        """``"full"`` or ``"tiny"`` random-weights config."""
        if size not in ("full", "tiny"):
            raise ValueError(f"size must be 'full' or 'tiny', got {size!r}")
        return dict(self.full_config if size == "full" else self.tiny_config)

    def build_random(self, size: str = "tiny", seed: int = 0) -> Any:
        """A freshly initialised VAE of this family (no download)."""
        import torch

        torch.manual_seed(seed)
        return self.vae_class()(**self.config(size))


_SD1 = _sd_like(4, True, 0.18215, None, 512)
_SDXL = _sd_like(4, True, 0.13025, None, 1024)
_FLUX = _sd_like(16, False, 0.3611, 0.1159, 1024)
_HUNYUAN: dict[str, Any] = dict(latent_channels=16, scaling_factor=0.476986)
_WAN: dict[str, Any] = dict(z_dim=16, latents_mean=WAN_LATENTS_MEAN, latents_std=WAN_LATENTS_STD)

FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family(
            name="sd-v1", class_name="AutoencoderKL", latent_channels=4, scaling_factor=0.18215,
            shift_factor=None, cuda_dtype="float16", hub_id="stabilityai/sd-vae-ft-mse", subfolder=None,
            full_config=_SD1, tiny_config=_sd_tiny(_SD1), aliases=("sd", "sd1", "sd-v1-5"),
        ),
        Family(
            name="sdxl", class_name="AutoencoderKL", latent_channels=4, scaling_factor=0.13025,
            shift_factor=None, cuda_dtype="float16", hub_id="madebyollin/sdxl-vae-fp16-fix", subfolder=None,
            full_config=_SDXL, tiny_config=_sd_tiny(_SDXL),
        ),
        Family(
            name="flux", class_name="AutoencoderKL", latent_channels=16, scaling_factor=0.3611,
            shift_factor=0.1159, cuda_dtype="bfloat16", hub_id="black-forest-labs/FLUX.1-schnell",
            subfolder="vae", full_config=_FLUX, tiny_config=_sd_tiny(_FLUX), packed=True,
        ),
        Family(
            name="hunyuanvideo", class_name="AutoencoderKLHunyuanVideo", latent_channels=16,
            scaling_factor=0.476986, shift_factor=None, cuda_dtype="float16",
            hub_id="hunyuanvideo-community/HunyuanVideo", subfolder="vae", full_config=_HUNYUAN,
            tiny_config={**_HUNYUAN, "block_out_channels": [8, 8, 16, 16], "layers_per_block": 1, "norm_num_groups": 4},
            video=True, temporal_factor=4, default_fps=15, aliases=("hunyuan",),
        ),
        Family(
            name="wan", class_name="AutoencoderKLWan", latent_channels=16, scaling_factor=None,
            shift_factor=None, cuda_dtype="bfloat16", hub_id="Wan-AI/Wan2.1-T2V-1.3B-Diffusers", subfolder="vae",
            full_config=_WAN, tiny_config={**_WAN, "base_dim": 8, "num_res_blocks": 1},
            video=True, temporal_factor=4, default_fps=16, latents_mean=WAN_LATENTS_MEAN,
            latents_std=WAN_LATENTS_STD, aliases=("wan2.1", "wan-2.1"),
        ),
    )
}  # fmt: skip

# Preview tier (appended): TAESD-family tiny autoencoders, diffusers' ``AutoencoderTiny``, decode only,
# served by custom_handlers/<name>-decode. Their weights say scaling_factor 1.0 / shift_factor 0.0: they
# decode the diffusion model's own latent space, so a pipeline's latents go in as they are, and the
# handler maps a request's scaling onto that space (see custom_handlers/taesd-decode/handler.py).
# The tiny config keeps the latent channels and the 8x up-sampling (four decoder stages) with 8 channels.
_TINY_AE_TINY: dict[str, Any] = {
    "encoder_block_out_channels": [8, 8, 8, 8],
    "decoder_block_out_channels": [8, 8, 8, 8],
    "num_encoder_blocks": [1, 1, 1, 1],
    "num_decoder_blocks": [1, 1, 1, 1],
}
#: The preview families, and the full family whose latent space each previews.
PREVIEW_OF = {"taesd": "sd-v1", "taesdxl": "sdxl", "taef1": "flux"}
for _preview in (
    Family(
        name="taesd", class_name="AutoencoderTiny", latent_channels=4, scaling_factor=1.0, shift_factor=0.0,
        cuda_dtype="float16", hub_id="madebyollin/taesd", subfolder=None, full_config={},
        tiny_config=dict(_TINY_AE_TINY),
    ),
    Family(
        name="taesdxl", class_name="AutoencoderTiny", latent_channels=4, scaling_factor=1.0, shift_factor=0.0,
        cuda_dtype="float16", hub_id="madebyollin/taesdxl", subfolder=None, full_config={},
        tiny_config=dict(_TINY_AE_TINY),
    ),
    Family(
        name="taef1", class_name="AutoencoderTiny", latent_channels=16, scaling_factor=1.0, shift_factor=0.0,
        cuda_dtype="bfloat16", hub_id="madebyollin/taef1", subfolder=None, full_config={"latent_channels": 16},
        tiny_config={**_TINY_AE_TINY, "latent_channels": 16}, packed=True,
    ),
):  # fmt: skip
    FAMILIES[_preview.name] = _preview


def get_family(name: str) -> Family:
    """Look a family up by name or alias (case-insensitive); a ValueError lists the valid names."""
    key = name.strip().lower()
    for fam in FAMILIES.values():
        if key == fam.name or key in fam.aliases:
            return fam
    raise ValueError(f"unknown VAE family {name!r}; expected one of {sorted(FAMILIES)}")
