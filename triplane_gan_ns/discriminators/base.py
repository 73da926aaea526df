"""The interface every discriminator implements."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Type

from jaxtyping import Float, Int
from nerfstudio.configs.base_config import InstantiateConfig
from torch import Tensor, nn


@dataclass
class DiscriminatorConfig(InstantiateConfig):
    """Common fields of every discriminator; ``setup(resolution=..., num_classes=..., in_channels=...)``."""

    _target: Type = field(default_factory=lambda: Discriminator)


class Discriminator(nn.Module):
    """Scores images in [-1, 1] (``in_channels`` channels, ``resolution``²) conditioned on class labels."""

    def __init__(self, config: DiscriminatorConfig, resolution: int, num_classes: int, in_channels: int = 3) -> None:
        super().__init__()
        self.config = config
        self.resolution = resolution
        self.num_classes = num_classes
        self.in_channels = in_channels

    def forward(self, images: Float[Tensor, "batch c h w"], labels: Int[Tensor, "batch"]) -> Float[Tensor, "batch"]:
        """Raw logits, one per image (positive means real)."""
        raise NotImplementedError
