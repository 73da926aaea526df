"""2D super-resolution from the neural rendering to the output resolution (as in EG3D, but our own design).

Each stage doubles the resolution (the last one lands exactly on the output size): the feature image is
upsampled bilinearly and refined by two style-modulated 3x3 convolutions conditioned on the latent's last w;
a 1x1 modulated layer predicts an RGB residual added to the bilinearly upsampled RGB, so at initialisation
the output is close to the upsampled neural rendering.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Type

import torch
import torch.nn.functional as F
from jaxtyping import Float
from nerfstudio.configs.base_config import InstantiateConfig
from torch import Tensor, nn

from triplane_gan_ns.backbones.layers import ModulatedConv2d


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
            self.to_rgb.append(ModulatedConv2d(config.channels, 3, 1, w_dim, demodulate=False))
            channels = config.channels

    def forward(
        self,
        rgb: Float[Tensor, "n 3 h w"],
        features: Float[Tensor, "n c h w"],
        w: Float[Tensor, "n w_dim"],
    ) -> Float[Tensor, "n 3 out out"]:
        x = features
        for size, (conv0, conv1), to_rgb in zip(self.sizes, self.convs, self.to_rgb):
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=False)
            rgb = F.interpolate(rgb, size=(size, size), mode="bilinear", align_corners=False, antialias=False)
            x = F.leaky_relu(conv0(x, w), 0.2) * math.sqrt(2)
            x = F.leaky_relu(conv1(x, w), 0.2) * math.sqrt(2)
            rgb = rgb + to_rgb(x, w)
        return rgb
