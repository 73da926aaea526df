"""EG3D-style pose sampler: yaw and pitch drawn from Gaussians around the front (+x) view."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional, Type

import torch
from jaxtyping import Float
from torch import Tensor

from triplane_gan_ns.cameras import yaw_pitch_directions
from triplane_gan_ns.pose_samplers.base import PoseSampler, PoseSamplerConfig


@dataclass
class GaussianFrontalPoseSamplerConfig(PoseSamplerConfig):
    """Cameras around the front view: yaw ~ N(0, yaw_std), pitch ~ N(pitch_mean, pitch_std), clamped."""

    _target: Type = field(default_factory=lambda: GaussianFrontalPoseSampler)
    yaw_std_degrees: float = 20.0
    """Standard deviation of the azimuth about the up (+z) axis."""
    pitch_mean_degrees: float = 0.0
    """Mean elevation above the horizontal plane."""
    pitch_std_degrees: float = 10.0
    """Standard deviation of the elevation."""
    max_abs_yaw_degrees: float = 90.0
    """Yaw is clamped to this range."""


class GaussianFrontalPoseSampler(PoseSampler):
    config: GaussianFrontalPoseSamplerConfig

    def sample_directions(self, num: int, generator: Optional[torch.Generator] = None) -> Float[Tensor, "num 3"]:
        c = self.config
        noise = torch.randn(2, num, generator=generator)
        yaw = (noise[0] * c.yaw_std_degrees).clamp(-c.max_abs_yaw_degrees, c.max_abs_yaw_degrees)
        pitch = (c.pitch_mean_degrees + noise[1] * c.pitch_std_degrees).clamp(-89.0, 89.0)
        return yaw_pitch_directions(yaw * math.pi / 180.0, pitch * math.pi / 180.0)
