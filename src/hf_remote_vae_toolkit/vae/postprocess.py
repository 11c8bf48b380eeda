"""Decoder output -> what the client asked for, with diffusers' exact rounding.

Input everywhere: the raw decoder output ``x``, ``[B, 3, H, W]``, model dtype, values about [-1, 1],
on the model's device. The uint8 path repeats ``VaeImageProcessor.postprocess`` step for step:
de-normalise in the model dtype (``x * 0.5 + 0.5``, clamp to [0, 1]), then ``.float()``, ``* 255``,
round half to even, cast. Done on the device, so only uint8 bytes cross to the host.
"""

from __future__ import annotations

import torch
from PIL import Image

__all__ = ["to_unit", "to_uint8", "to_pil_images"]


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """``[B, 3, H, W]`` in [-1, 1] -> same layout in [0, 1], same dtype (``(x / 2 + 0.5).clamp(0, 1)``)."""
    # x * 0.5 and x / 2 are the same IEEE operation; the clamp happens in the model dtype, as in diffusers
    return (x * 0.5 + 0.5).clamp(0, 1)


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """``[B, 3, H, W]`` in [-1, 1] -> uint8 ``[B, H, W, 3]``, C-contiguous, on x's device.

    Equal value for value to ``VaeImageProcessor().postprocess(x, "np")`` then ``(img * 255).round()``:
    numpy and torch both round half to even, and both multiply in float32.
    """
    unit = to_unit(x).float()
    return (unit * 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def to_pil_images(images: torch.Tensor) -> list[Image.Image]:
    """uint8 ``[B, H, W, 3]`` (any device) -> B RGB PIL images."""
    host = images.cpu().numpy()
    return [Image.fromarray(img) for img in host]
