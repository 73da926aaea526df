"""The triplane decoder: an MLP with softplus hidden layers, evaluated in cache-sized chunks.

A render evaluates the decoder at hundreds of thousands of points with narrow layers (8-64 channels), so its
cost is memory traffic, not arithmetic: autograd would write every pre-activation and activation of every
point to memory and read it back in the backward pass.  ``chunked_mlp`` instead runs the whole MLP on
``chunk`` points at a time, keeping the intermediates in cache, saves only its input, and recomputes the
hidden layers chunk by chunk in the backward pass (one extra forward of narrow matrix products).

Layers use the equalised learning rate of Karras et al. (as EG3D's decoder): weights are stored with unit
variance and scaled by ``1 / sqrt(fan_in)`` when used, so Adam's steps are relative to the weights' scale.
"""

from __future__ import annotations

import math
from typing import List, Sequence

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

CHUNK = 4096
"""Points per chunk on the CPU: a 4096 x 64 float activation is 1 MiB."""
GPU_CHUNK = 1 << 18
"""Points per chunk elsewhere: a GPU runs a chunk's layers as a few kernels each, so small chunks would cost a
kernel launch per layer per 4096 points; at 2^18 points a 64-channel activation is 64 MiB."""


def _softplus(z: Tensor) -> Tensor:
    """``F.softplus(z)`` computed as ``max(z, 0) - log(sigmoid(|z|))``.

    On the CPU torch vectorises ``sigmoid`` and ``log`` but not ``log1p``, which ``F.softplus`` uses: this is
    about 5x faster there.  ``sigmoid(|z|)`` lies in [0.5, 1], so nothing overflows; the result differs by less
    than 1e-6 absolute (beyond |z| = 17 the log term rounds to 0, where softplus adds e^-|z| < 5e-8)."""
    if z.device.type != "cpu":
        return F.softplus(z)
    return z.clamp_min(0).sub_(z.abs().sigmoid_().log_())


class _ChunkedMLP(torch.autograd.Function):
    """``x -> softplus(x W0^T + b0) -> ... -> h W_L^T + b_L``, chunk by chunk; params = (W0, b0, ..., W_L, b_L)."""

    @staticmethod
    def forward(ctx, x: Tensor, chunk: int, *params: Tensor) -> Tensor:  # type: ignore[override]
        weights, biases = params[0::2], params[1::2]
        out = x.new_empty(x.shape[0], weights[-1].shape[0])
        for start in range(0, x.shape[0], chunk):
            h = x[start : start + chunk]
            for w, b in zip(weights[:-1], biases[:-1]):
                h = _softplus(torch.addmm(b, h, w.t()))
            torch.addmm(biases[-1], h, weights[-1].t(), out=out[start : start + chunk])
        ctx.chunk = chunk
        ctx.save_for_backward(x, *params)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor):  # type: ignore[override]
        x, *params = ctx.saved_tensors
        # the recomputation runs in the saved tensors' precision also when the backward is called inside autocast
        # (which would otherwise run CUDA's softplus in float32)
        with torch.autocast(x.device.type, enabled=False):
            return _ChunkedMLP._backward(ctx, x, params, grad_out.to(x.dtype))

    @staticmethod
    def _backward(ctx, x: Tensor, params: List[Tensor], grad_out: Tensor):
        weights, biases = params[0::2], params[1::2]
        grad_w = [torch.zeros_like(w) for w in weights]
        grad_b = [torch.zeros_like(b) for b in biases]
        need_x = ctx.needs_input_grad[0]
        grad_x = torch.empty_like(x) if need_x else None
        grad_out = grad_out.contiguous()
        for start in range(0, x.shape[0], ctx.chunk):
            inputs: List[Tensor] = [x[start : start + ctx.chunk]]
            slopes: List[Tensor] = []
            for w, b in zip(weights[:-1], biases[:-1]):
                z = torch.addmm(b, inputs[-1], w.t())
                slopes.append(torch.sigmoid(z))  # softplus' derivative
                inputs.append(_softplus(z))
            g = grad_out[start : start + ctx.chunk]
            for i in range(len(weights) - 1, -1, -1):
                grad_w[i].addmm_(g.t(), inputs[i])
                grad_b[i].add_(g.sum(dim=0))
                if i == 0 and not need_x:
                    break
                g = g @ weights[i]
                if i > 0:
                    g = g * slopes[i - 1]
            if need_x:
                grad_x[start : start + ctx.chunk] = g
        grads = [t for pair in zip(grad_w, grad_b) for t in pair]
        return (grad_x, None, *grads)


class EqualizedLinear(nn.Module):
    """Fully connected layer whose weight is stored as N(0, 1) and scaled by ``1 / sqrt(in_features)``."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features))
        self.scale = 1.0 / math.sqrt(in_features)

    def effective_weight(self) -> Tensor:
        return self.weight * self.scale

    def forward(self, x: Float[Tensor, "*batch in_features"]) -> Float[Tensor, "*batch out_features"]:
        return F.linear(x, self.effective_weight(), self.bias)


class Decoder(nn.Module):
    """``in_features -> (hidden, softplus) x num_hidden -> out_features``, chunked (see the module docstring)."""

    def __init__(self, in_features: int, hidden: int, num_hidden: int, out_features: int, chunk: int = CHUNK) -> None:
        super().__init__()
        widths: Sequence[int] = [in_features] + [hidden] * num_hidden + [out_features]
        self.layers = nn.ModuleList(EqualizedLinear(a, b) for a, b in zip(widths[:-1], widths[1:]))
        self.chunk = chunk

    def params(self, outputs: slice = slice(None)) -> List[Tensor]:
        """Effective (W, b) of every layer, the last one restricted to ``outputs``."""
        params: List[Tensor] = []
        for i, layer in enumerate(self.layers):
            w, b = layer.effective_weight(), layer.bias
            if i == len(self.layers) - 1:
                w, b = w[outputs], b[outputs]
            params += [w, b]
        return params

    def forward(
        self, x: Float[Tensor, "*batch in_features"], outputs: slice = slice(None)
    ) -> Float[Tensor, "*batch out"]:
        """The MLP at every row of ``x``; ``outputs`` selects output channels (the density alone, say)."""
        shape = x.shape[:-1]
        flat = x.reshape(-1, x.shape[-1])
        params = self.params(outputs)
        device = flat.device.type
        in_dtype = flat.dtype
        if torch.is_autocast_enabled(device):  # run the layers in autocast's precision, as nn.Linear would
            dtype = torch.get_autocast_dtype(device)
            flat, params = flat.to(dtype), [p.to(dtype) for p in params]
        with torch.autocast(device, enabled=False):
            chunk = self.chunk if device == "cpu" else max(self.chunk, GPU_CHUNK)
            # no copy of a transposed input (one latent's [channels, points] plane features): the matrix
            # products read it as it lies
            out = _ChunkedMLP.apply(flat, chunk, *params)
        # density and colour leave in the input's precision: volume rendering composites in float32 under autocast
        return out.to(in_dtype).reshape(*shape, out.shape[-1])
