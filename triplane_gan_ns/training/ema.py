"""Exponential moving average of the generator's weights (StyleGAN2's G_ema), with a half-life in images."""

from __future__ import annotations

import torch
from torch import nn


def ema_beta(batch_images: int, half_life_kimg: float, rampup: float, seen_images: int) -> float:
    """Decay per step so that the average halves every ``half_life_kimg`` thousand images; during ramp-up
    the half-life is at most ``rampup`` times the images seen so far (0 disables the ramp-up)."""
    half_life = half_life_kimg * 1000
    if rampup > 0:
        half_life = min(half_life, seen_images * rampup)
    if half_life <= 0:
        return 0.0
    return 0.5 ** (batch_images / half_life)


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, beta: float) -> None:
    """ema = beta * ema + (1 - beta) * model for parameters; buffers (w average, noise) are copied."""
    for p_ema, p in zip(ema.parameters(), model.parameters()):
        p_ema.lerp_(p.detach(), 1.0 - beta)
    for b_ema, b in zip(ema.buffers(), model.buffers()):
        b_ema.copy_(b)
