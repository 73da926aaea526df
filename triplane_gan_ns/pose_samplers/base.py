"""The interface every pose sampler implements: draw cameras looking at the scene centre."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Type

import torch
from jaxtyping import Float
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.configs.base_config import InstantiateConfig
from torch import Tensor

from triplane_gan_ns.cameras import look_at, make_cameras


@dataclass
class PoseSamplerConfig(InstantiateConfig):
    """Common fields of every pose sampler; ``setup()`` builds it."""

    _target: Type = field(default_factory=lambda: PoseSampler)
    radius: float = 2.5
    """Distance of the camera from the scene centre."""
    fov_degrees: float = 40.0
    """Vertical (= horizontal) field of view of the square images."""


class PoseSampler:
    """Draws cameras on a sphere of ``config.radius`` around the origin, looking at the origin.

    Subclasses implement ``sample_directions``; everything else is shared.
    """

    def __init__(self, config: PoseSamplerConfig) -> None:
        self.config = config

    def sample_directions(
        self, num: int, generator: Optional[torch.Generator] = None
    ) -> Float[Tensor, "num 3"]:
        """Unit vectors from the scene centre towards each camera."""
        raise NotImplementedError

    def sample(
        self,
        num: int,
        resolution: int,
        device: torch.device | str = "cpu",
        generator: Optional[torch.Generator] = None,
    ) -> Cameras:
        """``num`` cameras of ``resolution``² pixels; ``generator`` (CPU) makes the draw reproducible."""
        directions = self.sample_directions(num, generator)
        return self.cameras_from_directions(directions.to(device), resolution)

    def cameras_from_directions(self, directions: Float[Tensor, "num 3"], resolution: int) -> Cameras:
        eyes = self.config.radius * torch.nn.functional.normalize(directions, dim=-1)
        return make_cameras(look_at(eyes), resolution, self.config.fov_degrees)
