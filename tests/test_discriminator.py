"""Tests of the StyleGAN2 residual discriminator and the minibatch-std layer (tiny configs, CPU)."""

from __future__ import annotations

import math

import pytest
import torch

from triplane_gan_ns.backbones.layers import EqualConv2d, MinibatchStd
from triplane_gan_ns.discriminators.base import DiscriminatorConfig
from triplane_gan_ns.discriminators.stylegan2_resnet import (
    StyleGAN2ResnetDiscriminator,
    StyleGAN2ResnetDiscriminatorConfig,
)

NUM_CLASSES = 5
TINY = dict(channel_base=256, channel_max=32)


def make(num_classes: int = NUM_CLASSES, resolution: int = 16, in_channels: int = 3, **overrides):
    torch.manual_seed(0)
    config = StyleGAN2ResnetDiscriminatorConfig(**{**TINY, **overrides})
    return config.setup(resolution=resolution, num_classes=num_classes, in_channels=in_channels)


def images(batch: int = 4, channels: int = 3, resolution: int = 16, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, channels, resolution, resolution, generator=torch.Generator().manual_seed(seed))


def test_config() -> None:
    assert issubclass(StyleGAN2ResnetDiscriminatorConfig, DiscriminatorConfig)
    assert StyleGAN2ResnetDiscriminatorConfig()._target is StyleGAN2ResnetDiscriminator


@pytest.mark.parametrize("in_channels", [3, 6])
@pytest.mark.parametrize("num_classes", [0, NUM_CLASSES])
def test_shapes_and_dtype(in_channels: int, num_classes: int) -> None:
    d = make(num_classes=num_classes, in_channels=in_channels)
    logits = d(images(channels=in_channels), torch.tensor([0, 1, 2, 4]))
    assert logits.shape == (4,) and logits.dtype == torch.float32
    assert torch.isfinite(logits).all()
    # Residual blocks halve the resolution from 16 down to 4.
    assert len(d.blocks) == 2


def test_wrong_input_shape_raises() -> None:
    d = make()
    with pytest.raises(ValueError):
        d(images(resolution=32), torch.zeros(4, dtype=torch.long))


@pytest.mark.parametrize("num_classes", [0, NUM_CLASSES])
def test_gradients_reach_every_parameter(num_classes: int) -> None:
    d = make(num_classes=num_classes)
    logits = d(images(), torch.tensor([0, 1, 2, 4]))
    (logits * torch.tensor([1.0, -2.0, 0.5, 3.0])).sum().backward()
    for name, p in d.named_parameters():
        assert p.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{name} has a non-finite gradient"
        assert p.grad.abs().sum() > 0, f"{name} has an all-zero gradient"


def test_changing_label_changes_logit() -> None:
    d = make()
    x = images(2)
    a = d(x, torch.tensor([0, 0]))
    b = d(x, torch.tensor([3, 0]))
    assert not torch.allclose(a[0], b[0])
    torch.testing.assert_close(a[1], b[1])


def test_unconditional_ignores_labels() -> None:
    d = make(num_classes=0)
    x = images()
    torch.testing.assert_close(d(x, torch.tensor([0, 1, 2, 3])), d(x, torch.tensor([3, 3, 3, 3])))


@pytest.mark.parametrize("cmap_dim, expected", [(0, 32), (16, 16)])
def test_cmap_dim(cmap_dim: int, expected: int) -> None:
    d = make(cmap_dim=cmap_dim)
    assert d.cmap_dim == expected
    assert d.out.weight.shape[0] == expected


def test_minibatch_std_couples_samples_in_a_group() -> None:
    d = make(mbstd_group_size=4)
    labels = torch.tensor([0, 1, 2, 3])
    x = images()
    y = x.clone()
    y[3] = torch.randn(3, 16, 16)
    assert not torch.allclose(d(x, labels)[0], d(y, labels)[0])

    independent = make(mbstd_group_size=1)
    torch.testing.assert_close(independent(x, labels)[0], independent(y, labels)[0])


def test_minibatch_std_group_size_fallback() -> None:
    layer = MinibatchStd(group_size=4, num_channels=2)
    # Batch 3 < group 4: one group of 3.
    x = torch.randn(3, 4, 4, 4)
    out = layer(x)
    assert out.shape == (3, 6, 4, 4)
    assert torch.equal(out[0, 4:], out[2, 4:])
    # Batch 6 is not divisible by 4: groups of gcd(4, 6) = 2 consecutive samples.
    x = torch.randn(6, 4, 4, 4)
    out = layer(x)
    assert out.shape == (6, 6, 4, 4)
    assert torch.equal(out[0, 4:], out[1, 4:])
    assert not torch.allclose(out[1, 4:], out[2, 4:])
    y = x.clone()
    y[5] += 1.0 + torch.randn(4, 4, 4)
    out_y = layer(y)
    assert torch.equal(out_y[:4], out[:4])
    assert not torch.allclose(out_y[4, 4:], out[4, 4:])
    # The statistic is the group's standard deviation averaged over features.
    x = torch.randn(4, 4, 4, 4)
    expected = x.std(dim=0, unbiased=False).reshape(2, -1).mean(1)
    torch.testing.assert_close(MinibatchStd(4, 2)(x)[0, 4:, 0, 0], expected, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError):
        MinibatchStd(4, 3)(x)


def test_equal_conv_scaling_and_downsampling() -> None:
    torch.manual_seed(0)
    conv = EqualConv2d(64, 64, 3)
    assert conv.scale == pytest.approx(1.0 / math.sqrt(64 * 9))
    assert conv.weight.std().item() == pytest.approx(1.0, rel=0.05)
    out = conv(torch.randn(8, 64, 16, 16))
    assert out.shape == (8, 64, 16, 16)
    assert out[..., 1:-1, 1:-1].std().item() == pytest.approx(1.0, rel=0.1)
    assert EqualConv2d(64, 8, 3, down=True)(torch.randn(1, 64, 16, 16)).shape == (1, 8, 8, 8)
    assert EqualConv2d(64, 8, 1, down=True, bias=False)(torch.randn(1, 64, 16, 16)).shape == (1, 8, 8, 8)


@pytest.mark.parametrize("resolution", [24, 2])
def test_bad_resolution_raises(resolution: int) -> None:
    with pytest.raises(ValueError, match="resolution"):
        make(resolution=resolution)
