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
    """Scores images in [-1, 1] (``in_channels`` channels, ``resolution``²) conditioned on class labels.

    ``views_per_latent`` tells the training loop how many views of each generated latent to render;
    ``score_generated`` scores such renders (latent-major: image k shows latent k // views_per_latent).
    """

    views_per_latent: int = 1

    def __init__(self, config: DiscriminatorConfig, resolution: int, num_classes: int, in_channels: int = 3) -> None:
        super().__init__()
        self.config = config
        self.resolution = resolution
        self.num_classes = num_classes
        self.in_channels = in_channels

    def forward(self, images: Float[Tensor, "batch c h w"], labels: Int[Tensor, "batch"]) -> Float[Tensor, "batch"]:
        """Raw logits, one per image (positive means real)."""
        raise NotImplementedError

    def score_generated(
        self, images: Float[Tensor, "batch_views c h w"], labels: Int[Tensor, "batch_views"]
    ) -> Float[Tensor, "batch_views"]:
        """Logits of generated images, ``views_per_latent`` consecutive views per latent."""
        return self(images, labels)
