"""StyleGAN2 residual discriminator with projection class conditioning (as in StyleGAN2-ADA and EG3D)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Type

from jaxtyping import Float, Int
from torch import Tensor, nn

from triplane_gan_ns.layers import EqualConv2d, EqualLinear, MappingNetwork, MinibatchStd
from triplane_gan_ns.discriminators.base import Discriminator, DiscriminatorConfig


@dataclass
class StyleGAN2ResnetDiscriminatorConfig(DiscriminatorConfig):
    """StyleGAN2 residual discriminator."""

    _target: Type = field(default_factory=lambda: StyleGAN2ResnetDiscriminator)
    channel_base: int = 32768
    """Channels at resolution r are min(channel_base // r, channel_max)."""
    channel_max: int = 512
    """Upper bound on the channels of any layer."""
    mbstd_group_size: int = 4
    """Samples per minibatch-standard-deviation group (reduced to divide the batch when needed)."""
    mbstd_channels: int = 1
    """Number of minibatch-standard-deviation feature channels."""
    cmap_dim: int = 0
    """Dimension of the class projection; 0 uses the final feature dimension."""


class DiscriminatorBlock(nn.Module):
    """Residual block halving the resolution: 3x3 conv, 3x3 conv with 2x down, plus a 1x1 down skip."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv0 = EqualConv2d(in_channels, in_channels, 3, activation=True)
        self.conv1 = EqualConv2d(in_channels, out_channels, 3, activation=True, down=True)
        self.skip = EqualConv2d(in_channels, out_channels, 1, bias=False, down=True)

    def forward(self, x: Float[Tensor, "b c_in h w"]) -> Float[Tensor, "b c_out h/2 w/2"]:
        return (self.skip(x) + self.conv1(self.conv0(x))) / math.sqrt(2.0)


class StyleGAN2ResnetDiscriminator(Discriminator):
    """fromRGB, residual blocks down to 4x4, minibatch std, 3x3 conv, FC, then the conditional output.

    With classes, the output FC maps to ``cmap_dim`` features, a mapping network maps the one-hot label to a
    ``cmap_dim`` vector (8 layers, learning-rate multiplier 0.01, as in StyleGAN2-ADA), and the logit is their
    dot product divided by ``sqrt(cmap_dim)``.  Without classes the output FC maps to a single logit.
    """

    def __init__(
        self, config: StyleGAN2ResnetDiscriminatorConfig, resolution: int, num_classes: int, in_channels: int = 3
    ) -> None:
        super().__init__(config, resolution, num_classes, in_channels)
        if resolution < 4 or resolution & (resolution - 1):
            raise ValueError(
                f"discriminator resolution must be a power of two >= 4, got {resolution}; "
                "render the images at e.g. 64, 128 or 256"
            )

        def channels(r: int) -> int:
            return min(config.channel_base // r, config.channel_max)

        self.from_rgb = EqualConv2d(in_channels, channels(resolution), 1, activation=True)
        blocks = []
        r = resolution
        while r > 4:
            blocks.append(DiscriminatorBlock(channels(r), channels(r // 2)))
            r //= 2
        self.blocks = nn.ModuleList(blocks)

        c4 = channels(4)
        self.mbstd = MinibatchStd(config.mbstd_group_size, config.mbstd_channels)
        self.conv = EqualConv2d(c4 + config.mbstd_channels, c4, 3, activation=True)
        self.fc = EqualLinear(c4 * 4 * 4, c4, activation=True)
        self.cmap_dim = (config.cmap_dim or c4) if num_classes > 0 else 0
        self.out = EqualLinear(c4, self.cmap_dim if num_classes > 0 else 1)
        self.class_mapping = (
            MappingNetwork(0, self.cmap_dim, num_classes, num_layers=8, lr_multiplier=0.01) if num_classes > 0 else None
        )

    def forward(self, images: Float[Tensor, "batch c h w"], labels: Int[Tensor, "batch"]) -> Float[Tensor, "batch"]:
        if images.shape[1:] != (self.in_channels, self.resolution, self.resolution):
            raise ValueError(
                f"discriminator expects images of shape [B, {self.in_channels}, {self.resolution}, "
                f"{self.resolution}], got {list(images.shape)}"
            )
        x = self.from_rgb(images)
        for block in self.blocks:
            x = block(x)
        x = self.conv(self.mbstd(x))
        x = self.out(self.fc(x.flatten(1)))
        if self.class_mapping is None:
            return x[:, 0]
        cmap = self.class_mapping(None, labels)
        return (x * cmap).sum(dim=1) / math.sqrt(self.cmap_dim)

