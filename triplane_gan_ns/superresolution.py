"""2D super-resolution from the neural rendering to the output resolution (as in EG3D, but our own design).

Each stage doubles the resolution (the last one lands exactly on the output size): the feature image is
upsampled bilinearly and refined by two style-modulated 3x3 convolutions conditioned on the latent's last w;
a 1x1 modulated layer (ToRGB) predicts an RGB residual at the stage's resolution.  The residuals are summed
through the stages (each upsampled bilinearly to the next stage) and added to the neural rendering upsampled
bilinearly to the output size in one step.  The ToRGB weights start at zero, so at initialisation the output
is exactly that upsampled neural rendering; their gradient is not zero (it is the features times the style),
so the residual grows from the first step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Type

import torch.nn.functional as F
from jaxtyping import Float
from nerfstudio.configs.base_config import InstantiateConfig
from torch import Tensor, nn

from triplane_gan_ns.layers import ModulatedConv2d


@dataclass
class SuperResolutionConfig(InstantiateConfig):
    """``setup(in_channels=..., w_dim=..., in_resolution=..., out_resolution=...)``."""

    _target: Type = field(default_factory=lambda: SuperResolution)
    channels: int = 128
    """Hidden channels of every stage."""


class SuperResolution(nn.Module):
    def __init__(
        self, config: SuperResolutionConfig, in_channels: int, w_dim: int, in_resolution: int, out_resolution: int
    ) -> None:
        super().__init__()
        self.config = config
        self.out_resolution = out_resolution
        num_stages = max(1, math.ceil(math.log2(out_resolution / in_resolution)))
        self.sizes = [min(in_resolution * 2 ** (i + 1), out_resolution) for i in range(num_stages)]
        self.sizes[-1] = out_resolution
        self.convs = nn.ModuleList()
        self.to_rgb = nn.ModuleList()
        channels = in_channels
        for _ in self.sizes:
            self.convs.append(
                nn.ModuleList(
                    [
                        ModulatedConv2d(channels, config.channels, 3, w_dim),
                        ModulatedConv2d(config.channels, config.channels, 3, w_dim),
                    ]
                )
            )
            to_rgb = ModulatedConv2d(config.channels, 3, 1, w_dim, demodulate=False)
            nn.init.zeros_(to_rgb.weight)  # no residual at first: SR starts as bilinear upsampling
            self.to_rgb.append(to_rgb)
            channels = config.channels

    def forward(
        self,
        rgb: Float[Tensor, "n 3 h w"],
        features: Float[Tensor, "n c h w"],
        w: Float[Tensor, "n w_dim"],
    ) -> Float[Tensor, "n 3 out out"]:
        x = features
        residual = None
        for size, (conv0, conv1), to_rgb in zip(self.sizes, self.convs, self.to_rgb):
            x = upsample_bilinear(x, size)
            x = F.leaky_relu(conv0(x, w), 0.2) * math.sqrt(2)
            x = F.leaky_relu(conv1(x, w), 0.2) * math.sqrt(2)
            step = to_rgb(x, w)
            residual = step if residual is None else upsample_bilinear(residual, size) + step
        return upsample_bilinear(rgb, self.out_resolution) + residual


def upsample_bilinear(x: Float[Tensor, "n c h w"], size: int) -> Float[Tensor, "n c size size"]:
    """Bilinear resize to ``size``² (half-pixel centres, no antialiasing): how SR and dual discrimination lift
    the neural rendering to the output resolution."""
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=False)
