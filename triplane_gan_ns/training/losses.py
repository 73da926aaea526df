"""StyleGAN2 losses: non-saturating logistic GAN loss and the R1 gradient penalty on real images."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor


def generator_loss(fake_logits: Float[Tensor, "batch"]) -> Tensor:
    """Non-saturating generator loss: E[softplus(-D(G(z)))]."""
    return F.softplus(-fake_logits).mean()


def discriminator_loss(real_logits: Float[Tensor, "batch"], fake_logits: Float[Tensor, "batch"]) -> Tensor:
    """Logistic discriminator loss: E[softplus(D(G(z)))] + E[softplus(-D(x))]."""
    return F.softplus(fake_logits).mean() + F.softplus(-real_logits).mean()


def r1_penalty(real_logits: Float[Tensor, "batch"], *real_images: Float[Tensor, "batch c h w"]) -> Tensor:
    """E[|grad_x D(x)|^2] over real images (each tensor in ``real_images`` must require grad); with several
    tensors (dual discrimination: the photo and its low-resolution copy) the squared norms of the gradients
    with respect to each are summed.  Multiply by gamma / 2."""
    grads = torch.autograd.grad(real_logits.sum(), real_images, create_graph=True)
    return sum(g.square().sum(dim=[1, 2, 3]) for g in grads).mean()
