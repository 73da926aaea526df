"""The interface every backbone implements: (z, class label) -> w -> three feature planes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Type

import torch
from jaxtyping import Float, Int
from nerfstudio.configs.base_config import InstantiateConfig
from torch import Tensor, nn


@dataclass
class BackboneConfig(InstantiateConfig):
    """Common fields of every backbone; ``setup(num_classes=...)`` builds it."""

    _target: Type = field(default_factory=lambda: Backbone)
    z_dim: int = 512
    """Dimension of the input latent z."""
    w_dim: int = 512
    """Dimension of the intermediate latent w."""
    plane_channels: int = 32
    """Feature channels of each of the three planes."""
    plane_resolution: int = 256
    """Side length of each plane."""


class Backbone(nn.Module):
    """Maps latents and class labels to triplanes.

    Subclasses set ``num_ws`` (how many w vectors ``synthesis`` takes) and implement ``mapping`` and
    ``synthesis``.  Labels are integer class indices in ``[0, num_classes)``; ``num_classes == 0`` means
    unconditional (labels are ignored).
    """

    num_ws: int

    def __init__(self, config: BackboneConfig, num_classes: int) -> None:
        super().__init__()
        self.config = config
        self.num_classes = num_classes
        self.z_dim = config.z_dim
        self.w_dim = config.w_dim
        self.plane_channels = config.plane_channels
        self.plane_resolution = config.plane_resolution

    def mapping(
        self,
        z: Float[Tensor, "batch z_dim"],
        labels: Int[Tensor, "batch"],
        truncation_psi: float = 1.0,
        truncation_cutoff: Optional[int] = None,
        update_w_avg: bool = False,
    ) -> Float[Tensor, "batch num_ws w_dim"]:
        raise NotImplementedError

    def synthesis(
        self, ws: Float[Tensor, "batch num_ws w_dim"], noise_mode: str = "random"
    ) -> Float[Tensor, "batch 3 channels res res"]:
        raise NotImplementedError

    def forward(
        self,
        z: Float[Tensor, "batch z_dim"],
        labels: Int[Tensor, "batch"],
        truncation_psi: float = 1.0,
        truncation_cutoff: Optional[int] = None,
        noise_mode: str = "random",
    ) -> Float[Tensor, "batch 3 channels res res"]:
        return self.synthesis(self.mapping(z, labels, truncation_psi, truncation_cutoff), noise_mode=noise_mode)

    def w_average(self, labels: Int[Tensor, "batch"]) -> Float[Tensor, "batch num_ws w_dim"]:
        """The running average of w for each label, broadcast to every layer (the truncation centre)."""
        raise NotImplementedError

    @staticmethod
    def seeded_z(seed: int, z_dim: int, device: torch.device | str = "cpu") -> Float[Tensor, "1 z_dim"]:
        """The latent of a seed, identical on every device."""
        g = torch.Generator().manual_seed(int(seed))
        return torch.randn(1, z_dim, generator=g).to(device)
