"""Class-conditional StyleGAN2 generator whose output image is read as a triplane.

``StyleGAN2BackboneConfig`` is the paper's backbone (Shen & Wang): after every synthesis block that doubles
the resolution comes one extra block of the same structure at that resolution, which deepens the generator
for the diversity of ImageNet.  ``StyleGAN2EG3DBackboneConfig`` is the EG3D baseline without those blocks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import List, Optional, Tuple, Type

import torch
import torch.distributed as dist
from jaxtyping import Float, Int
from torch import Tensor, nn

from triplane_gan_ns.backbones.base import Backbone, BackboneConfig
from triplane_gan_ns.layers import NOISE_MODES, MappingNetwork, StyledConv, ToRGB


@dataclass
class StyleGAN2BackboneConfig(BackboneConfig):
    """StyleGAN2 triplane generator with the paper's extra synthesis blocks."""

    _target: Type = field(default_factory=lambda: StyleGAN2Backbone)
    mapping_layers: int = 8
    """Number of fully connected layers of the mapping network z -> w."""
    mapping_lr_multiplier: float = 0.01
    """Learning-rate multiplier of the mapping network's layers."""
    channel_base: int = 32768
    """Channels at resolution r are min(channel_base // r, channel_max)."""
    channel_max: int = 512
    """Upper bound on the channels of any synthesis layer."""
    extra_blocks: bool = True
    """After every block that doubles the resolution, add one more block at that resolution (the paper's change)."""
    w_avg_beta: float = 0.995
    """Decay of the per-class running average of w used as the truncation centre; the average is bias-corrected
    (a class's k-th latest batch mean weighs beta^k, the weights normalised to sum to one)."""


@dataclass
class StyleGAN2EG3DBackboneConfig(StyleGAN2BackboneConfig):
    """The EG3D baseline: the same StyleGAN2 triplane generator without the extra synthesis blocks."""

    extra_blocks: bool = False
    """After every block that doubles the resolution, add one more block at that resolution (the paper's change)."""


def total_weight(count: Float[Tensor, "*shape"], beta: float) -> Float[Tensor, "*shape"]:
    """Sum of the weights (1 - beta) beta^k of a zero-started moving average after ``count`` updates:
    1 - beta^count (0 before the first update, 1 for an infinite count); for beta = 1, ``count`` itself."""
    count = count.double()
    if beta <= 0:
        return (count > 0).double()
    if beta >= 1:
        return count
    return -torch.expm1(count * math.log(beta))


def merge_w_averages(
    w_avg: Float[Tensor, "processes classes w_dim"], count: Float[Tensor, "processes classes"], beta: float
) -> Tuple[Float[Tensor, "classes w_dim"], Float[Tensor, "classes"]]:
    """One bias-corrected average per class from those of several processes (each trained on its own labels).

    Each process's average is weighed by its total weight ``total_weight(count)``, so a class that only some
    processes have seen keeps their average instead of being pulled toward the zeros of the others; a class no
    process has seen stays zero.  The merged count is the one whose total weight is the processes' mean."""
    weight = total_weight(count, beta)  # [P, C]
    total = weight.sum(0)
    merged = (weight[..., None] * w_avg.double()).sum(0) / torch.where(total > 0, total, 1.0)[:, None]
    mean = total / count.shape[0]
    if beta <= 0:
        merged_count = (mean > 0).double()
    elif beta >= 1:
        merged_count = mean
    else:
        merged_count = torch.log1p(-mean) / math.log(beta)
    return merged.to(w_avg.dtype), merged_count.to(count.dtype)


class ConstantInputBlock(nn.Module):
    """The 4x4 block: a learned constant, one modulated 3x3 conv and a ToRGB.  Takes 2 ws."""

    num_conv = 1

    def __init__(self, channels: int, w_dim: int, img_channels: int) -> None:
        super().__init__()
        self.resolution = 4
        self.up = False
        self.const = nn.Parameter(torch.randn(channels, 4, 4))
        self.conv = StyledConv(channels, channels, 3, w_dim, resolution=4)
        self.torgb = ToRGB(channels, img_channels, w_dim)

    def forward(
        self,
        x: Optional[Tensor],
        img: Optional[Tensor],
        ws: Float[Tensor, "b 2 w_dim"],
        noise_mode: str = "random",
    ) -> tuple[Float[Tensor, "b c 4 4"], Float[Tensor, "b o 4 4"]]:
        x = self.const[None].expand(ws.shape[0], -1, -1, -1)
        x = self.conv(x, ws[:, 0], noise_mode)
        return x, self.torgb(x, ws[:, 1])


class SynthesisBlock(nn.Module):
    """Two modulated 3x3 convs (the first upsampling 2x when ``up``) and a ToRGB added to the skip image.

    Takes 3 ws: one per conv and one for the ToRGB.
    """

    num_conv = 2

    def __init__(
        self, in_channels: int, out_channels: int, w_dim: int, resolution: int, img_channels: int, up: bool
    ) -> None:
        super().__init__()
        self.resolution = resolution
        self.up = up
        self.conv0 = StyledConv(in_channels, out_channels, 3, w_dim, resolution, up=up)
        self.conv1 = StyledConv(out_channels, out_channels, 3, w_dim, resolution)
        self.torgb = ToRGB(out_channels, img_channels, w_dim, up=up)

    def forward(
        self,
        x: Float[Tensor, "b c_in h0 w0"],
        img: Float[Tensor, "b o h0 w0"],
        ws: Float[Tensor, "b 3 w_dim"],
        noise_mode: str = "random",
    ) -> tuple[Float[Tensor, "b c_out h w"], Float[Tensor, "b o h w"]]:
        x = self.conv0(x, ws[:, 0], noise_mode)
        x = self.conv1(x, ws[:, 1], noise_mode)
        return x, self.torgb(x, ws[:, 2], skip=img)


class StyleGAN2Backbone(Backbone):
    """StyleGAN2 generator (mapping + skip-architecture synthesis) producing ``[B, 3, plane_channels, R, R]``.

    Synthesis is a list of blocks: the 4x4 ``ConstantInputBlock``, then for each resolution 8, 16, ..., R an
    upsampling ``SynthesisBlock`` followed, when ``extra_blocks``, by a non-upsampling one at the same
    resolution.  The ToRGB outputs (``3 * plane_channels`` channels) are summed through the blocks.

    The w convention follows StyleGAN2: every conv takes its own w, and a block's ToRGB shares the w of the
    next block's first conv; the last ToRGB takes one more.  So ``num_ws = (number of convs) + 1``, i.e.
    ``2 * (len(blocks) - 1) + 2``, and block ``i`` reads ``ws[:, start_i : start_i + num_conv_i + 1]`` with
    ``start_i`` the number of convs before it.
    """

    def __init__(self, config: StyleGAN2BackboneConfig, num_classes: int) -> None:
        super().__init__(config, num_classes)
        res = config.plane_resolution
        if res < 4 or res & (res - 1):
            raise ValueError(f"plane_resolution must be a power of two >= 4, got {res}; set it to e.g. 64, 128 or 256")
        self.w_avg_beta = config.w_avg_beta
        img_channels = 3 * config.plane_channels

        def channels(r: int) -> int:
            return min(config.channel_base // r, config.channel_max)

        self.mapping_network = MappingNetwork(
            config.z_dim, config.w_dim, num_classes, config.mapping_layers, config.mapping_lr_multiplier
        )
        self.register_buffer("w_avg", torch.zeros(max(num_classes, 1), config.w_dim))
        # times each class's average was updated; inf marks an average loaded from a checkpoint without counts
        self.register_buffer("w_avg_count", torch.zeros(max(num_classes, 1)))

        blocks: List[nn.Module] = [ConstantInputBlock(channels(4), config.w_dim, img_channels)]
        r = 8
        while r <= res:
            blocks.append(SynthesisBlock(channels(r // 2), channels(r), config.w_dim, r, img_channels, up=True))
            if config.extra_blocks:
                blocks.append(SynthesisBlock(channels(r), channels(r), config.w_dim, r, img_channels, up=False))
            r *= 2
        self.blocks = nn.ModuleList(blocks)
        self.num_synthesis_blocks = len(self.blocks)
        self.num_ws = sum(block.num_conv for block in self.blocks) + 1

    def _class_index(self, labels: Optional[Int[Tensor, "b"]], batch: int, device: torch.device) -> Int[Tensor, "b"]:
        """Row of ``w_avg`` for each sample (always 0 when unconditional)."""
        if self.num_classes == 0 or labels is None:
            return torch.zeros(batch, dtype=torch.long, device=device)
        return labels.long().to(device)

    @torch.no_grad()
    def _update_w_avg(self, w: Float[Tensor, "b w_dim"], index: Int[Tensor, "b"]) -> None:
        """Moves the average of each class present in the batch toward that class's batch mean of w.

        ``w_avg`` holds the bias-corrected exponential average: after batch means m_1..m_n of a class it is
        sum_k beta^(n-k) m_k / sum_k beta^(n-k), not the zero-started EMA (1 - beta) sum_k beta^(n-k) m_k,
        which is biased toward 0 by the factor 1 - beta^n.  With c = 1 - beta^n the update is
        w_avg += (m_n - w_avg) (1 - beta) / c, so the first mean of a class is taken as it is."""
        w = w.detach().to(self.w_avg.dtype)
        sums = torch.zeros_like(self.w_avg).index_add_(0, index, w)
        counts = torch.bincount(index, minlength=self.w_avg.shape[0]).to(w.dtype)
        present = counts > 0
        means = sums[present] / counts[present, None]
        seen = self.w_avg_count[present] + 1
        beta = self.w_avg_beta
        if beta <= 0:
            weight = torch.ones_like(seen, dtype=torch.float64)
        else:  # (1 - beta) / (1 - beta^n); for beta = 1 the limit 1 / n, the plain mean of all batch means
            weight = (1 - beta) / total_weight(seen, beta) if beta < 1 else 1 / seen.double()
        self.w_avg[present] = torch.lerp(self.w_avg[present], means, weight.to(w.dtype)[:, None])
        self.w_avg_count[present] = seen

    @torch.no_grad()
    def all_reduce_w_avg(self) -> None:
        """In a distributed run, give every process the merge (``merge_w_averages``) of all processes' averages."""
        world = dist.get_world_size()
        gathered = []
        for buffer in (self.w_avg, self.w_avg_count):
            parts = [torch.empty_like(buffer) for _ in range(world)]
            dist.all_gather(parts, buffer.contiguous())
            gathered.append(torch.stack(parts))
        w_avg, count = merge_w_averages(gathered[0], gathered[1], self.w_avg_beta)
        self.w_avg.copy_(w_avg)
        self.w_avg_count.copy_(count)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        # checkpoints from before the count hold a plain EMA: read it as converged (count inf, weight 1 - beta)
        key = prefix + "w_avg_count"
        if prefix + "w_avg" in state_dict and key not in state_dict:
            state_dict[key] = torch.full_like(self.w_avg_count, math.inf)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def mapping(
        self,
        z: Float[Tensor, "batch z_dim"],
        labels: Int[Tensor, "batch"],
        truncation_psi: float = 1.0,
        truncation_cutoff: Optional[int] = None,
        update_w_avg: bool = False,
    ) -> Float[Tensor, "batch num_ws w_dim"]:
        w = self.mapping_network(z, labels)
        index = self._class_index(labels, w.shape[0], w.device)
        if update_w_avg:
            self._update_w_avg(w, index)
        ws = w[:, None].repeat(1, self.num_ws, 1)
        if truncation_psi != 1.0:
            cutoff = self.num_ws if truncation_cutoff is None else truncation_cutoff
            centre = self.w_avg[index][:, None].to(ws.dtype)
            ws[:, :cutoff] = torch.lerp(centre, ws[:, :cutoff], truncation_psi)
        return ws

    def w_average(self, labels: Int[Tensor, "batch"]) -> Float[Tensor, "batch num_ws w_dim"]:
        index = self._class_index(labels, labels.shape[0], self.w_avg.device)
        return self.w_avg[index][:, None].repeat(1, self.num_ws, 1)

    def synthesis(
        self, ws: Float[Tensor, "batch num_ws w_dim"], noise_mode: str = "random"
    ) -> Float[Tensor, "batch 3 channels res res"]:
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}")
        if ws.shape[1] != self.num_ws:
            raise ValueError(f"synthesis expects {self.num_ws} ws per sample, got {ws.shape[1]}")
        x = img = None
        start = 0
        for block in self.blocks:
            x, img = block(x, img, ws[:, start : start + block.num_conv + 1], noise_mode)
            start += block.num_conv
        b, _, h, w = img.shape
        return img.reshape(b, 3, self.plane_channels, h, w)

