"""Adam with configurable betas (nerfstudio's AdamOptimizerConfig fixes them; StyleGAN2 uses (0, 0.99))."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple, Type

import torch
from nerfstudio.engine.optimizers import OptimizerConfig


@dataclass
class AdamBetasOptimizerConfig(OptimizerConfig):
    """Adam with its betas exposed."""

    _target: Type = torch.optim.Adam
    betas: Tuple[float, float] = (0.0, 0.99)
    """Adam's (beta1, beta2)."""
    weight_decay: float = 0.0
    """The weight decay to use."""
