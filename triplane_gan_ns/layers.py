"""StyleGAN2 building blocks shared by the generator backbone, the discriminator and the super-resolution: layers
with equalised learning rate, modulated convolutions, FIR resampling, noise, minibatch std, and the mapping network
(z and class -> w for the generator; class -> conditioning vector for the discriminator).

Everything here is plain PyTorch.  Weights use the equalised learning rate of Karras et al.: parameters are
stored with unit variance and scaled by ``1 / sqrt(fan_in)`` at run time, so that Adam sees every layer at the
same scale.  Resampling uses a separable FIR filter (``[1, 3, 3, 1]`` by default) applied as a depthwise
convolution whose derivatives are depthwise convolutions too (``_DepthwiseFilter``).
"""

from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor, nn

NOISE_MODES = ("random", "const", "none")


def lrelu(x: Tensor) -> Tensor:
    """Leaky ReLU (slope 0.2) scaled by sqrt(2) to keep the signal's second moment."""
    return F.leaky_relu(x, 0.2) * math.sqrt(2.0)


def normalize_2nd_moment(x: Float[Tensor, "b c"], dim: int = 1, eps: float = 1e-8) -> Float[Tensor, "b c"]:
    """Scales ``x`` to unit mean square along ``dim``."""
    return x * torch.rsqrt(x.square().mean(dim=dim, keepdim=True) + eps)


def make_fir_filter(taps: Sequence[float] = (1, 3, 3, 1)) -> Float[Tensor, "k k"]:
    """The separable 2D filter ``outer(taps, taps)``, normalised to sum to one."""
    f = torch.tensor(taps, dtype=torch.float32)
    f = f[:, None] * f[None, :]
    return f / f.sum()


class _DepthwiseFilter(torch.autograd.Function):
    """``conv2d(x, weight, groups=channels)`` for a fixed filter (no gradient for it), whose derivatives are
    again depthwise convolutions: its input gradient is torch's own (``convolution_backward``, the very numbers
    autograd computes), and the gradient of that gradient is this convolution once more.  R1 differentiates the
    discriminator's resampling filters twice; torch's generic double backward of a grouped convolution there ran
    thousands of small convolutions per penalty on a GPU (docs/benchmarks.md)."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor) -> Tensor:  # type: ignore[override]
        if ctx.needs_input_grad[1]:
            raise ValueError("the resampling filter is fixed: it gets no gradient")
        y = F.conv2d(x, weight, groups=x.shape[1])
        ctx.save_for_backward(weight.to(y.dtype))
        ctx.input_shape = x.shape
        return y

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        (weight,) = ctx.saved_tensors
        return _DepthwiseFilterInputGrad.apply(grad, weight, ctx.input_shape), None


class _DepthwiseFilterInputGrad(torch.autograd.Function):
    """The input gradient of ``_DepthwiseFilter``; linear in ``grad``, so its own gradient is the filter again."""

    @staticmethod
    def forward(ctx, grad: Tensor, weight: Tensor, input_shape: torch.Size) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(weight)
        shape_only = grad.new_empty(input_shape)  # convolution_backward reads only its shape for the input gradient
        return torch.ops.aten.convolution_backward(
            grad.to(weight.dtype), shape_only, weight, None, [1, 1], [0, 0], [1, 1], False, [0, 0], input_shape[1],
            [True, False, False],
        )[0]

    @staticmethod
    def backward(ctx, grad_of_grad: Tensor):  # type: ignore[override]
        (weight,) = ctx.saved_tensors
        return _DepthwiseFilter.apply(grad_of_grad.to(weight.dtype), weight), None, None


def fir_filter2d(
    x: Float[Tensor, "b c h w"], f: Float[Tensor, "k k"], pad: Tuple[int, int], gain: float = 1.0
) -> Float[Tensor, "b c h2 w2"]:
    """Zero-pads both axes by ``pad = (before, after)`` and convolves every channel with ``f * gain``."""
    c = x.shape[1]
    x = F.pad(x, [pad[0], pad[1], pad[0], pad[1]])
    weight = (f * gain).flip([0, 1]).to(x.dtype)[None, None].repeat(c, 1, 1, 1)
    return _DepthwiseFilter.apply(x, weight)


def upsample2d(x: Float[Tensor, "b c h w"], f: Float[Tensor, "k k"]) -> Float[Tensor, "b c 2*h 2*w"]:
    """2x upsampling: insert zeros between samples, then low-pass with ``f`` (gain 4 restores the level)."""
    b, c, h, w = x.shape
    x = x.reshape(b, c, h, 1, w, 1)
    x = F.pad(x, [0, 1, 0, 0, 0, 1]).reshape(b, c, 2 * h, 2 * w)
    k = f.shape[0]
    return fir_filter2d(x, f, pad=((k + 1) // 2, (k - 2) // 2), gain=4.0)


def downsample2d(x: Float[Tensor, "b c h w"], f: Float[Tensor, "k k"]) -> Float[Tensor, "b c h/2 w/2"]:
    """2x downsampling: low-pass with ``f``, then keep every second sample."""
    k = f.shape[0]
    return fir_filter2d(x, f, pad=((k - 1) // 2, (k - 2) // 2))[:, :, ::2, ::2]


class EqualLinear(nn.Module):
    """Fully connected layer with equalised learning rate.

    The weight is stored as ``N(0, 1) / lr_multiplier`` and multiplied by ``lr_multiplier / sqrt(in_features)``
    at run time, so the layer's output starts at unit scale while its effective learning rate is scaled by
    ``lr_multiplier``.  The bias is stored divided by ``lr_multiplier`` in the same way, so it starts at
    ``bias_init``.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        bias_init: float = 0.0,
        lr_multiplier: float = 1.0,
        activation: bool = False,
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_multiplier)
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init) / lr_multiplier)) if bias else None
        self.scale = lr_multiplier / math.sqrt(in_features)
        self.lr_multiplier = lr_multiplier
        self.activation = activation

    def forward(self, x: Float[Tensor, "*batch in_features"]) -> Float[Tensor, "*batch out_features"]:
        bias = None if self.bias is None else self.bias * self.lr_multiplier
        x = F.linear(x, self.weight * self.scale, bias)
        return lrelu(x) if self.activation else x

    def extra_repr(self) -> str:
        out_features, in_features = self.weight.shape
        return f"{in_features}, {out_features}, lr_multiplier={self.lr_multiplier}, activation={self.activation}"


class EqualConv2d(nn.Module):
    """2D convolution with equalised learning rate; ``down=True`` blurs and then convolves with stride 2."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        bias: bool = True,
        activation: bool = False,
        down: bool = False,
        fir_taps: Sequence[float] = (1, 3, 3, 1),
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.scale = 1.0 / math.sqrt(in_channels * kernel_size * kernel_size)
        self.activation = activation
        self.down = down
        self.register_buffer("fir", make_fir_filter(fir_taps), persistent=False)

    def forward(self, x: Float[Tensor, "b c_in h w"]) -> Float[Tensor, "b c_out h2 w2"]:
        weight = self.weight * self.scale
        k = weight.shape[-1]
        if self.down:
            # Blur so that the stride-2 convolution's output lands on a grid of exactly half the size.
            p = self.fir.shape[0] - 2 + k - 1
            x = fir_filter2d(x, self.fir, pad=((p + 1) // 2, p // 2))
            x = F.conv2d(x, weight, self.bias, stride=2)
        else:
            x = F.conv2d(x, weight, self.bias, padding=k // 2)
        return lrelu(x) if self.activation else x

    def extra_repr(self) -> str:
        out_channels, in_channels, k, _ = self.weight.shape
        return f"{in_channels}, {out_channels}, kernel_size={k}, activation={self.activation}, down={self.down}"


class ModulatedConv2d(nn.Module):
    """StyleGAN2 convolution whose weights are scaled per sample by a style computed from w.

    The style ``s = A(w)`` multiplies the input channels of the kernel; with ``demodulate`` each output
    channel's kernel is then renormalised to unit L2 norm, which replaces AdaIN's instance normalisation.  The
    per-sample kernels are applied at once as a grouped convolution.  ``up=True`` uses a stride-2 transposed
    convolution followed by an FIR low-pass, doubling the resolution.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        w_dim: int,
        demodulate: bool = True,
        up: bool = False,
        fir_taps: Sequence[float] = (1, 3, 3, 1),
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.demodulate = demodulate
        self.up = up
        self.affine = EqualLinear(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.scale = 1.0 / math.sqrt(in_channels * kernel_size * kernel_size)
        self.register_buffer("fir", make_fir_filter(fir_taps), persistent=False)

    def forward(self, x: Float[Tensor, "b c_in h w"], w: Float[Tensor, "b w_dim"]) -> Float[Tensor, "b c_out h2 w2"]:
        b, _, h, wd = x.shape
        c_in, c_out, k = self.in_channels, self.out_channels, self.kernel_size
        style = self.affine(w)
        weight = self.weight[None] * self.scale * style[:, None, :, None, None]  # [b, c_out, c_in, k, k]
        if self.demodulate:
            weight = weight * torch.rsqrt(weight.square().sum(dim=[2, 3, 4], keepdim=True) + 1e-8)

        x = x.reshape(1, b * c_in, h, wd)
        if self.up:
            weight = weight.transpose(1, 2).reshape(b * c_in, c_out, k, k)
            x = F.conv_transpose2d(x, weight, stride=2, groups=b)
            # The transposed convolution yields 2h + k - 2 samples; the low-pass trims them to 2h.
            p = self.fir.shape[0] - 2 - (k - 1)
            x = fir_filter2d(x, self.fir, pad=((p + 1) // 2 + 1, p // 2 + 1), gain=4.0)
        else:
            x = F.conv2d(x, weight.reshape(b * c_out, c_in, k, k), padding=k // 2, groups=b)
        return x.reshape(b, c_out, x.shape[-2], x.shape[-1])

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"demodulate={self.demodulate}, up={self.up}"
        )


class NoiseInjection(nn.Module):
    """Adds single-channel Gaussian noise scaled by a learned strength (initially zero).

    ``noise_mode``: ``'random'`` draws fresh noise per call, ``'const'`` uses a fixed buffer drawn at
    construction (saved with the model), ``'none'`` adds nothing.
    """

    def __init__(self, resolution: int) -> None:
        super().__init__()
        self.strength = nn.Parameter(torch.zeros([]))
        self.register_buffer("noise_const", torch.randn(1, 1, resolution, resolution))

    def forward(self, x: Float[Tensor, "b c h w"], noise_mode: str = "random") -> Float[Tensor, "b c h w"]:
        if noise_mode == "none":
            return x
        if noise_mode == "random":
            noise = torch.randn(x.shape[0], 1, x.shape[2], x.shape[3], device=x.device, dtype=x.dtype)
        elif noise_mode == "const":
            noise = self.noise_const.to(x.dtype)
        else:
            raise ValueError(f"noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}")
        return x + self.strength * noise


class StyledConv(nn.Module):
    """One synthesis layer: modulated conv, noise, bias, leaky ReLU."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, w_dim: int, resolution: int, up: bool = False
    ) -> None:
        super().__init__()
        self.conv = ModulatedConv2d(in_channels, out_channels, kernel_size, w_dim, demodulate=True, up=up)
        self.noise = NoiseInjection(resolution)
        self.bias = nn.Parameter(torch.zeros(out_channels))

    def forward(
        self, x: Float[Tensor, "b c_in h w"], w: Float[Tensor, "b w_dim"], noise_mode: str = "random"
    ) -> Float[Tensor, "b c_out h2 w2"]:
        x = self.conv(x, w)
        x = self.noise(x, noise_mode)
        return lrelu(x + self.bias[None, :, None, None].to(x.dtype))  # bf16 under autocast: no float32 copy


class ToRGB(nn.Module):
    """Output layer of a synthesis block: modulated 1x1 conv without demodulation, plus bias.

    With a ``skip`` image from the previous block (upsampled 2x first when ``up``), returns their sum, which
    gives StyleGAN2's skip-connection generator.
    """

    def __init__(
        self, in_channels: int, out_channels: int, w_dim: int, up: bool = False, fir_taps: Sequence[float] = (1, 3, 3, 1)
    ) -> None:
        super().__init__()
        self.conv = ModulatedConv2d(in_channels, out_channels, 1, w_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.up = up
        self.register_buffer("fir", make_fir_filter(fir_taps), persistent=False)

    def forward(
        self, x: Float[Tensor, "b c h w"], w: Float[Tensor, "b w_dim"], skip: Optional[Float[Tensor, "b o h0 w0"]] = None
    ) -> Float[Tensor, "b o h w"]:
        out = self.conv(x, w) + self.bias[None, :, None, None]  # float32 bias: float32 under autocast
        if skip is not None:
            out = out + (upsample2d(skip, self.fir) if self.up else skip)
        return out


class MinibatchStd(nn.Module):
    """Appends the standard deviation of features across groups of samples as extra channels.

    The batch is split into consecutive groups of ``group_size`` samples (``min(group_size, batch)``, reduced
    to its greatest common divisor with the batch size when it does not divide it).  The ``num_channels``
    extra channels hold, for each group, the per-feature standard deviation over the group averaged over
    channels and pixels, so each sample's output depends on the other samples of its group.
    """

    def __init__(self, group_size: int = 4, num_channels: int = 1) -> None:
        super().__init__()
        self.group_size = group_size
        self.num_channels = num_channels

    def forward(self, x: Float[Tensor, "b c h w"]) -> Float[Tensor, "b c+f h w"]:
        b, c, h, w = x.shape
        f = self.num_channels
        if c % f:
            raise ValueError(f"minibatch std: {c} channels are not divisible by num_channels={f}")
        g = math.gcd(min(self.group_size, b), b)
        y = x.reshape(b // g, g, f, c // f, h, w)
        y = (y - y.mean(dim=1, keepdim=True)).square().mean(dim=1)  # variance over the group
        y = (y + 1e-8).sqrt().mean(dim=[2, 3, 4])  # [groups, f]
        y = y.repeat_interleave(g, dim=0)[:, :, None, None].expand(b, f, h, w)
        return torch.cat([x, y.to(x.dtype)], dim=1)

    def extra_repr(self) -> str:
        return f"group_size={self.group_size}, num_channels={self.num_channels}"


class MappingNetwork(nn.Module):
    """z and class label -> w, as in StyleGAN2-ADA.

    The label is one-hot encoded and embedded to ``w_dim`` by a linear layer; z and the embedding are each
    normalised to unit second moment and concatenated, then passed through ``num_layers`` fully connected
    layers with leaky ReLU.  ``num_classes == 0`` is unconditional (labels are ignored); ``z_dim == 0`` maps the
    label alone (used by the discriminator's projection conditioning).
    """

    def __init__(
        self, z_dim: int, w_dim: int, num_classes: int, num_layers: int = 8, lr_multiplier: float = 0.01
    ) -> None:
        super().__init__()
        if z_dim == 0 and num_classes == 0:
            raise ValueError("MappingNetwork needs z_dim > 0 or num_classes > 0")
        self.z_dim = z_dim
        self.w_dim = w_dim
        self.num_classes = num_classes
        self.embed = EqualLinear(num_classes, w_dim) if num_classes > 0 else None
        in_features = z_dim + (w_dim if num_classes > 0 else 0)
        features = [in_features] + [w_dim] * num_layers
        self.layers = nn.Sequential(
            *[
                EqualLinear(f_in, f_out, lr_multiplier=lr_multiplier, activation=True)
                for f_in, f_out in zip(features[:-1], features[1:])
            ]
        )

    def forward(
        self, z: Optional[Float[Tensor, "b z_dim"]], labels: Optional[Int[Tensor, "b"]]
    ) -> Float[Tensor, "b w_dim"]:
        parts = []
        if self.z_dim > 0:
            parts.append(normalize_2nd_moment(z))
        if self.embed is not None:
            one_hot = F.one_hot(labels.long(), self.num_classes).to(self.embed.weight.dtype)
            parts.append(normalize_2nd_moment(self.embed(one_hot)))
        return self.layers(torch.cat(parts, dim=1))
