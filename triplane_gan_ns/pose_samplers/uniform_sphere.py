"""The paper's pose sampler: camera directions uniform on the whole sphere."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Type

import torch
from jaxtyping import Float
from torch import Tensor

from triplane_gan_ns.cameras import uniform_sphere_directions
from triplane_gan_ns.pose_samplers.base import PoseSampler, PoseSamplerConfig


@dataclass
class UniformSpherePoseSamplerConfig(PoseSamplerConfig):
    """Cameras uniform on the sphere of ``radius``, looking at the origin (no pose prior at all)."""

    _target: Type = field(default_factory=lambda: UniformSpherePoseSampler)


class UniformSpherePoseSampler(PoseSampler):
    def sample_directions(self, num: int, generator: Optional[torch.Generator] = None) -> Float[Tensor, "num 3"]:
        return uniform_sphere_directions(num, generator)
