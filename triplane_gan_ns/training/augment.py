"""Differentiable augmentation of real and generated images before the discriminator (kornia), with an
ADA-style adaptive probability: every ``interval`` steps the probability moves up when the discriminator is
too sure of the real images (E[sign D(real)] above ``target``) and down otherwise.

Inputs may stack several RGB images per sample along the channels (dual discrimination: the image and its
upsampled neural rendering, 6 channels); every RGB triple of a sample gets the same geometric and colour
transform."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Tuple

import kornia.augmentation as K
import torch
from jaxtyping import Float
from torch import Tensor, nn


@dataclass
class AugmentConfig:
    """Augmentation of everything the discriminator sees."""

    mode: Literal["ada", "fixed", "none"] = "ada"
    """'ada': adaptive probability; 'fixed': always ``probability``; 'none': off."""
    probability: float = 0.0
    """Initial (ada) or constant (fixed) probability of each augmentation."""
    target: float = 0.6
    """ADA target of E[sign(D(real))]."""
    interval: int = 4
    """Steps between probability updates."""
    speed_kimg: float = 100.0
    """Thousands of real images for the probability to move from 0 to 1."""
    translate: float = 0.125
    """Largest translation as a fraction of the image size."""
    scale: float = 0.2
    """Largest log2-free relative zoom (scale in [1 - s, 1 + s])."""
    rotate_degrees: float = 0.0
    """Largest rotation (0 keeps the horizon level)."""
    color: float = 0.2
    """Strength of brightness, contrast and saturation jitter."""


class Augmenter(nn.Module):
    """Applies random transforms, each with probability ``p``, to a batch; ``p`` lives in a buffer so that it
    is saved in checkpoints.  A sample of ``3 k`` channels is ``k`` RGB images that all get that sample's
    transform: the geometric one moves all channels at once, the colour one is drawn once and applied to each
    RGB triple."""

    def __init__(self, config: AugmentConfig) -> None:
        super().__init__()
        self.config = config
        self.register_buffer("p", torch.tensor(float(config.probability)))
        self.register_buffer("sign_sum", torch.tensor(0.0))
        self.register_buffer("sign_count", torch.tensor(0.0))

    def _transforms(self, p: float) -> Tuple[nn.Module, nn.Module]:
        c = self.config
        geometric = K.RandomAffine(
            degrees=c.rotate_degrees, translate=(c.translate, c.translate), scale=(1 - c.scale, 1 + c.scale),
            padding_mode="reflection", p=p,
        )
        colour = K.ColorJitter(brightness=c.color, contrast=c.color, saturation=c.color, p=p)
        return geometric, colour

    def forward(self, images: Float[Tensor, "b c h w"]) -> Float[Tensor, "b c h w"]:
        """Augment images in [-1, 1] (returned in [-1, 1] range before clamping-free colour jitter); ``c`` is
        a multiple of 3, each RGB triple of a sample transformed alike."""
        p = float(self.p)
        if self.config.mode == "none" or p <= 0:
            return images
        if images.shape[1] % 3:
            raise ValueError(f"augmentation takes RGB images stacked along the channels, got {images.shape[1]} channels")
        geometric, colour = self._transforms(p)
        moved = geometric((images + 1) / 2)
        triples = moved.split(3, dim=1)
        params = colour.forward_parameters(triples[0].shape)  # one colour change per sample, for every triple
        out = torch.cat([colour(t, params=params) for t in triples], dim=1)
        return out * 2 - 1

    @torch.no_grad()
    def accumulate(self, real_logits: Float[Tensor, "b"]) -> None:
        """Collect the sign statistic of the discriminator on real images (ada only)."""
        if self.config.mode == "ada":
            self.sign_sum += torch.sign(real_logits.detach().float()).sum().to(self.sign_sum.device)
            self.sign_count += real_logits.numel()

    @torch.no_grad()
    def update(self, step: int, images_per_step: int) -> None:
        """Every ``interval`` steps, move ``p`` towards keeping E[sign D(real)] at ``target``."""
        c = self.config
        if c.mode != "ada" or (step + 1) % c.interval != 0 or self.sign_count == 0:
            return
        statistic = self.sign_sum / self.sign_count
        adjust = torch.sign(statistic - c.target) * (images_per_step * c.interval) / (c.speed_kimg * 1000)
        self.p.copy_((self.p + adjust).clamp(0.0, 1.0))
        self.sign_sum.zero_()
        self.sign_count.zero_()

    def statistic(self) -> float:
        return float(self.sign_sum / self.sign_count) if self.sign_count > 0 else float("nan")
