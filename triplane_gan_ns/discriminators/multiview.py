"""The paper's multi-view discrimination: every latent is rendered from several random cameras and every
view must convince the discriminator.

Real photos are single views of different objects, so views are judged one at a time by an image
discriminator against real photos of the same class; the generator's loss is the mean over all views, so a
latent cannot look real from one side only.  Views of one latent are never put in the same minibatch-std
group (they would be told apart from real photos by their similarity alone): generated images are reordered
view-major before scoring, so each group holds the same view index of different latents.  See
docs/method.md for the choices the paper leaves open.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Type

from jaxtyping import Float, Int
from torch import Tensor

from triplane_gan_ns.discriminators.base import Discriminator, DiscriminatorConfig
from triplane_gan_ns.discriminators.stylegan2_resnet import StyleGAN2ResnetDiscriminatorConfig


@dataclass
class MultiViewDiscriminatorConfig(DiscriminatorConfig):
    """Judges ``num_views`` renders of each latent, each against real photos of the latent's class."""

    _target: Type = field(default_factory=lambda: MultiViewDiscriminator)
    num_views: int = 3
    """Views rendered per latent (cameras from the pose sampler)."""
    image: StyleGAN2ResnetDiscriminatorConfig = field(default_factory=StyleGAN2ResnetDiscriminatorConfig)
    """The per-view image discriminator."""


class MultiViewDiscriminator(Discriminator):
    config: MultiViewDiscriminatorConfig

    def __init__(
        self, config: MultiViewDiscriminatorConfig, resolution: int, num_classes: int, in_channels: int = 3
    ) -> None:
        super().__init__(config, resolution, num_classes, in_channels)
        if config.num_views < 1:
            raise ValueError(f"num_views must be at least 1, got {config.num_views}")
        self.views_per_latent = config.num_views
        self.image = config.image.setup(resolution=resolution, num_classes=num_classes, in_channels=in_channels)

    def forward(self, images: Float[Tensor, "batch c h w"], labels: Int[Tensor, "batch"]) -> Float[Tensor, "batch"]:
        return self.image(images, labels)

    def score_generated(
        self, images: Float[Tensor, "batch_views c h w"], labels: Int[Tensor, "batch_views"]
    ) -> Float[Tensor, "batch_views"]:
        views = self.views_per_latent
        n = images.shape[0]
        if n % views != 0:
            raise ValueError(f"{n} generated images are not {views} views of whole latents")
        batch = n // views

        def view_major(x: Tensor) -> Tensor:
            return x.reshape(batch, views, *x.shape[1:]).transpose(0, 1).reshape(n, *x.shape[1:])

        logits = self.image(view_major(images), view_major(labels))
        return logits.reshape(views, batch).transpose(0, 1).reshape(n)
