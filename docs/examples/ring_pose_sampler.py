"""A third-party pose sampler for triplane-gan-ns: cameras on a horizontal ring.

Every camera sits at distance ``radius`` from the scene centre, at a fixed elevation above the horizontal
(xy) plane (world z is up), at an azimuth drawn uniformly from [0, 360) degrees, and looks at the centre.
Registered by its package's ``pyproject.toml`` under the entry-point group ``triplane_gan_ns.pose_samplers``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional, Type

import torch
from torch import Tensor

from triplane_gan_ns.cameras import yaw_pitch_directions
from triplane_gan_ns.pose_samplers.base import PoseSampler, PoseSamplerConfig


@dataclass
class RingPoseSamplerConfig(PoseSamplerConfig):
    """Cameras on a horizontal ring at a fixed elevation, uniformly random azimuth."""

    _target: Type = field(default_factory=lambda: RingPoseSampler)
    elevation_degrees: float = 15.0
    """Elevation of the ring above the horizontal plane (world z is up)."""


class RingPoseSampler(PoseSampler):
    config: RingPoseSamplerConfig

    def sample_directions(self, num: int, generator: Optional[torch.Generator] = None) -> Tensor:
        """``num`` unit vectors from the scene centre towards the cameras."""
        yaw = 2.0 * math.pi * torch.rand(num, generator=generator)
        pitch = torch.full((num,), math.radians(self.config.elevation_degrees))
        return yaw_pitch_directions(yaw, pitch)
