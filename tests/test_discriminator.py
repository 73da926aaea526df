"""Tests of the StyleGAN2 residual discriminator, the minibatch-std layer, and dual discrimination in the training
pipeline (tiny configs, CPU)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from triplane_gan_ns.layers import EqualConv2d, MinibatchStd
from triplane_gan_ns.discriminators.base import DiscriminatorConfig
from triplane_gan_ns.discriminators.stylegan2_resnet import (
    StyleGAN2ResnetDiscriminator,
    StyleGAN2ResnetDiscriminatorConfig,
)
from triplane_gan_ns.errors import UserError
from triplane_gan_ns.training import losses

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


# ---- dual discrimination in the training pipeline (neural 16² -> output 32², so there is super-resolution) ----
def _dual_trainer(tiny_trainer, **overrides):
    return tiny_trainer(resolution=32, pipeline__model__generator__neural_resolution=16, **overrides)


def _record_discriminator_inputs(pipeline):
    """Every batch the per-view image discriminator is given, and every real batch and render drawn."""
    seen = {"inputs": [], "real": [], "fake": []}
    model = pipeline.gan_model
    model.discriminator.image.register_forward_pre_hook(lambda m, args: seen["inputs"].append(args[0].detach().clone()))
    next_train, generate = pipeline.datamanager.next_train, model.generate

    def recording_next_train(step):
        batch = next_train(step)
        seen["real"].append(batch)
        return batch

    def recording_generate(*args, **kwargs):
        out = generate(*args, **kwargs)
        seen["fake"].append(out)
        return out

    pipeline.datamanager.next_train = recording_next_train
    model.generate = recording_generate
    return seen


def _down_up(photo, neural):
    down = F.interpolate(photo, size=(neural, neural), mode="bilinear", align_corners=False, antialias=True)
    return F.interpolate(down, size=photo.shape[-2:], mode="bilinear", align_corners=False)


def test_dual_discriminator_sees_six_channels_real_raw_half_is_the_resized_photo(tiny_trainer):
    pipeline = _dual_trainer(tiny_trainer).pipeline
    model = pipeline.gan_model
    assert model.dual_discrimination and model.discriminator.in_channels == 6
    assert model.discriminator.image.from_rgb.weight.shape[1] == 6
    seen = _record_discriminator_inputs(pipeline)
    pipeline.gan_losses(1, "discriminator")  # not an R1 step; the tiny preset has no blur or augmentation
    real_in, fake_in = seen["inputs"]
    photo = seen["real"][0]["image"]
    assert real_in.shape == (photo.shape[0], 6, 32, 32)
    torch.testing.assert_close(real_in[:, :3], photo * 2 - 1)
    resized = _down_up(photo, 16) * 2 - 1
    torch.testing.assert_close(real_in[:, 3:], resized, rtol=0, atol=1e-6)
    assert (resized - (photo * 2 - 1)).abs().max() > 0.1  # the raw half is really the blurrier copy
    # generated side: the super-resolved image and the neural rendering upsampled (views reordered view-major)
    fake = seen["fake"][0]
    views = model.discriminator.views_per_latent
    expected = torch.cat([fake["image"], F.interpolate(fake["image_raw"], size=(32, 32), mode="bilinear")], 1) * 2 - 1
    batch = expected.shape[0] // views
    expected = expected.reshape(batch, views, 6, 32, 32).transpose(0, 1).reshape(-1, 6, 32, 32)
    assert fake["image_raw"].shape[-1] == 16
    torch.testing.assert_close(fake_in, expected, rtol=0, atol=1e-6)


def test_dual_real_raw_half_follows_the_neural_resolution_schedule(tiny_trainer):
    pipeline = _dual_trainer(tiny_trainer, pipeline__neural_resolution_final=32, pipeline__neural_resolution_fade_kimg=1.0).pipeline
    photo = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    step = 125  # half way: 500 of 1000 images at batch 4
    assert pipeline.neural_resolution(step) == 24
    images, leaves = pipeline._real_images(photo, step)
    assert [tuple(t.shape) for t in leaves] == [(2, 3, 32, 32), (2, 3, 24, 24)]
    torch.testing.assert_close(images[:, 3:], _down_up(photo, 24), rtol=0, atol=1e-6)
    torch.testing.assert_close(images[:, :3], photo, rtol=0, atol=0)


def test_dual_r1_reaches_both_halves(tiny_trainer):
    pipeline = _dual_trainer(tiny_trainer, pipeline__augment__mode="fixed", pipeline__augment__probability=1.0,
                             pipeline__blur_init_sigma=2.0).pipeline
    model = pipeline.gan_model
    photo = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 1, 2, 3])
    images, (image, raw) = pipeline._real_images(photo, 0, requires_grad=True)
    torch.manual_seed(3)
    logits = model.discriminator(pipeline._prepare(images, 0), labels)  # blurred and augmented, as in training
    g_image, g_raw = torch.autograd.grad(logits.sum(), (image, raw), retain_graph=True)
    assert g_image.abs().sum() > 0 and g_raw.abs().sum() > 0 and g_raw.shape == (4, 3, 16, 16)
    expected = (g_image.square().sum(dim=[1, 2, 3]) + g_raw.square().sum(dim=[1, 2, 3])).mean()
    torch.testing.assert_close(losses.r1_penalty(logits, image, raw), expected)

    # the pipeline's R1 step penalises both: the logged penalty is the two-tensor one on its real batch
    plain = _dual_trainer(tiny_trainer).pipeline
    seen = _record_discriminator_inputs(plain)
    loss_dict, metrics = plain.gan_losses(0, "discriminator")  # step 0 is an R1 step
    photo = seen["real"][0]["image"]
    images, leaves = plain._real_images(photo, 0, requires_grad=True)
    logits = plain.gan_model.discriminator(plain._prepare(images, 0), seen["real"][0]["label"])
    both = losses.r1_penalty(logits, *leaves) / 4
    image_only = losses.r1_penalty(logits, leaves[0]) / 4
    torch.testing.assert_close(metrics["r1_penalty"], both.detach())
    assert both.item() > image_only.item() > 0
    loss_dict["r1"].backward()
    assert plain.gan_model.discriminator.image.from_rgb.weight.grad[:, 3:].abs().sum() > 0


def test_dual_discrimination_switch_and_models_without_superresolution(tiny_trainer, tiny_model):
    pipeline = _dual_trainer(tiny_trainer, pipeline__model__dual_discrimination=False).pipeline
    assert not pipeline.gan_model.dual_discrimination and pipeline.gan_model.discriminator.in_channels == 3
    seen = _record_discriminator_inputs(pipeline)
    pipeline.gan_losses(1, "discriminator")
    assert [x.shape[1] for x in seen["inputs"]] == [3, 3]
    # the tiny preset renders at the data resolution: nothing to discriminate twice, whatever the switch says
    assert tiny_model.config.dual_discrimination and not tiny_model.dual_discrimination
    assert tiny_model.discriminator.in_channels == 3


def test_checkpoint_of_the_other_dual_setting_says_how_to_resume(tiny_trainer):
    pipeline = _dual_trainer(tiny_trainer).pipeline
    state = {k: v.clone() for k, v in pipeline.state_dict().items()}
    key = "_model.discriminator.image.from_rgb.weight"
    state[key] = state[key][:, :3].clone()  # as trained without dual discrimination
    with pytest.raises(UserError, match="--pipeline.model.dual-discrimination False") as err:
        pipeline.load_pipeline(state, 10)
    assert "\n" not in str(err.value)


def test_runs_from_before_dual_discrimination_load_without_it(tmp_path):
    import copy

    import yaml

    from triplane_gan_ns.runs import read_run_config
    from triplane_gan_ns.method_configs.triplane_gan import triplane_gan

    config = copy.deepcopy(triplane_gan.config)
    del config.pipeline.model.__dict__["dual_discrimination"]  # a config.yml written before the option
    (tmp_path / "old.yml").write_text(yaml.dump(config))
    assert read_run_config(tmp_path / "old.yml").pipeline.model.dual_discrimination is False
    (tmp_path / "new.yml").write_text(yaml.dump(triplane_gan.config))
    assert read_run_config(tmp_path / "new.yml").pipeline.model.dual_discrimination is True
