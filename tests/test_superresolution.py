"""Super-resolution starts as bilinear upsampling of the neural rendering, and learns from the first step."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from triplane_gan_ns.superresolution import SuperResolutionConfig


def make(in_resolution: int, out_resolution: int, in_channels: int = 8, w_dim: int = 16):
    torch.manual_seed(0)
    return SuperResolutionConfig(channels=16).setup(
        in_channels=in_channels, w_dim=w_dim, in_resolution=in_resolution, out_resolution=out_resolution
    )


def inputs(batch: int, resolution: int, in_channels: int = 8, w_dim: int = 16, seed: int = 1):
    gen = torch.Generator().manual_seed(seed)
    rgb = torch.rand(batch, 3, resolution, resolution, generator=gen)
    features = torch.randn(batch, in_channels, resolution, resolution, generator=gen)
    w = torch.randn(batch, w_dim, generator=gen)
    return rgb, features, w


@pytest.mark.parametrize("in_resolution, out_resolution", [(16, 32), (8, 32), (12, 32)])
def test_at_initialisation_sr_is_bilinear_upsampling_of_the_raw_image(in_resolution, out_resolution):
    sr = make(in_resolution, out_resolution)
    rgb, features, w = inputs(2, in_resolution)
    out = sr(rgb, features, w)
    # one bilinear resize from the neural resolution, however many stages the network has
    expected = F.interpolate(rgb, size=(out_resolution, out_resolution), mode="bilinear", align_corners=False)
    assert out.shape == (2, 3, out_resolution, out_resolution)
    assert (out - expected).abs().max() <= 1e-6
    assert len(sr.sizes) == len(sr.to_rgb) and sr.sizes[-1] == out_resolution


def test_zero_torgb_still_learns_in_one_step():
    sr = make(8, 32)
    rgb, features, w = inputs(2, 8)
    target = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    before = sr(rgb, features, w).detach()
    loss = (sr(rgb, features, w) - target).square().mean()
    loss.backward()
    for to_rgb in sr.to_rgb:  # zero weights, but their gradient (features times style) is not zero
        assert torch.count_nonzero(to_rgb.weight) == 0
        assert to_rgb.weight.grad is not None and to_rgb.weight.grad.abs().sum() > 0
    torch.optim.Adam(sr.parameters(), lr=1e-3).step()
    after = sr(rgb, features, w).detach()
    assert all(torch.count_nonzero(to_rgb.weight) > 0 for to_rgb in sr.to_rgb)
    assert (after - before).abs().max() > 1e-4
    assert (after - target).square().mean() < (before - target).square().mean()
