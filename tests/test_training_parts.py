"""Multi-view discrimination, EMA, adaptive augmentation, losses, and checkpoint safety, unit by unit."""

from __future__ import annotations

import math
import platform
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from triplane_gan_ns import registry
from triplane_gan_ns.errors import UserError
from triplane_gan_ns.training import losses
from triplane_gan_ns.training.augment import AugmentConfig, Augmenter
from triplane_gan_ns.training.ema import ema_beta, update_ema
from triplane_gan_ns.runs import load_checkpoint_file, save_checkpoint_file
from triplane_gan_ns.training.trainer import rng_state, set_rng_state


def _multiview(num_views=3, group=4):
    from triplane_gan_ns.discriminators.stylegan2_resnet import StyleGAN2ResnetDiscriminatorConfig

    cfg = registry.config(
        "discriminators",
        "multiview",
        num_views=num_views,
        image=StyleGAN2ResnetDiscriminatorConfig(channel_base=128, channel_max=16, mbstd_group_size=group),
    )
    torch.manual_seed(0)
    return cfg.setup(resolution=16, num_classes=5)


def test_multiview_scores_each_view_and_never_groups_views_of_one_latent():
    d = _multiview(num_views=3, group=4)
    assert d.views_per_latent == 3
    seen = []
    d.image.register_forward_pre_hook(lambda m, args: seen.append(args[1].clone()))
    batch, views = 4, 3
    images = torch.randn(batch * views, 3, 16, 16)
    labels = torch.arange(batch).repeat_interleave(views)  # latent-major: label = latent index here
    logits = d.score_generated(images, labels)
    assert logits.shape == (12,)
    order = seen[-1]
    # view-major: each consecutive group of 4 holds 4 different latents
    for g in range(0, 12, 4):
        assert len(set(order[g : g + 4].tolist())) == 4
    # the logits come back latent-major: equal to scoring the same view-major batch directly
    view_major = images.view(batch, views, 3, 16, 16).transpose(0, 1).reshape(12, 3, 16, 16)
    direct = d(view_major, labels.view(batch, views).t().reshape(12))
    torch.testing.assert_close(logits, direct.view(views, batch).t().reshape(12))


def test_multiview_generator_loss_covers_every_view():
    d = _multiview(num_views=3, group=1)
    images = torch.randn(6, 3, 16, 16, requires_grad=True)
    loss = losses.generator_loss(d.score_generated(images, torch.tensor([0, 0, 0, 1, 1, 1])))
    loss.backward()
    per_image = images.grad.abs().flatten(1).sum(1)
    assert (per_image > 0).all()


def test_losses_match_their_formulas():
    real, fake = torch.tensor([2.0, -1.0]), torch.tensor([0.5, -3.0])
    expected_d = (F.softplus(fake)).mean() + F.softplus(-real).mean()
    torch.testing.assert_close(losses.discriminator_loss(real, fake), expected_d)
    torch.testing.assert_close(losses.generator_loss(fake), F.softplus(-fake).mean())
    # R1 of D(x) = sum(a * x) is |a|^2 for every sample
    x = torch.randn(3, 1, 2, 2, requires_grad=True)
    a = torch.tensor([1.0, 2.0, 0.0, -1.0]).view(1, 1, 2, 2)
    torch.testing.assert_close(losses.r1_penalty((x * a).sum(dim=[1, 2, 3]), x), torch.tensor(6.0))


def test_ema_half_life_and_update():
    beta = ema_beta(batch_images=32, half_life_kimg=10.0, rampup=0.0, seen_images=10**6)
    assert math.isclose(beta ** (10_000 / 32), 0.5, rel_tol=1e-9)
    # ramp-up shortens the half-life early in training
    assert ema_beta(32, 10.0, 0.05, seen_images=1000) < beta
    ema, model = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    old = ema.weight.detach().clone()
    update_ema(ema, model, 0.75)
    torch.testing.assert_close(ema.weight, 0.75 * old + 0.25 * model.weight.detach())


def test_ada_probability_follows_the_sign_statistic():
    aug = Augmenter(AugmentConfig(mode="ada", probability=0.5, target=0.6, interval=2, speed_kimg=0.01))
    aug.accumulate(torch.ones(8))  # D very sure of reals: statistic 1 > 0.6 -> more augmentation
    aug.update(step=1, images_per_step=1)
    assert math.isclose(float(aug.p), 0.5 + 2 / 10, rel_tol=1e-6)
    aug.accumulate(-torch.ones(8))
    aug.update(step=3, images_per_step=1)
    assert math.isclose(float(aug.p), 0.5, rel_tol=1e-6)
    aug.accumulate(-torch.ones(8))
    aug.update(step=4, images_per_step=1)  # not an update step
    assert math.isclose(float(aug.p), 0.5, rel_tol=1e-6)
    for _ in range(10):
        aug.accumulate(-torch.ones(8))
        aug.update(step=5, images_per_step=100)
    assert float(aug.p) == 0.0  # clamped
    assert "p" in dict(aug.named_buffers())  # saved with checkpoints


def test_augmentation_is_identity_when_off_and_differentiable_when_on():
    x = torch.rand(4, 3, 16, 16) * 2 - 1
    assert torch.equal(Augmenter(AugmentConfig(mode="none", probability=1.0))(x), x)
    assert torch.equal(Augmenter(AugmentConfig(mode="fixed", probability=0.0))(x), x)
    on = Augmenter(AugmentConfig(mode="fixed", probability=1.0))
    x.requires_grad_(True)
    y = on(x)
    assert y.shape == x.shape and not torch.allclose(y, x)
    y.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_augmentation_gives_both_halves_of_a_dual_input_the_same_transform():
    """A 6-channel input (image, upsampled raw image) is moved and recoloured as one: each half gets exactly
    the transform a 3-channel input gets from the same random draws, so equal halves stay equal."""
    gen = torch.Generator().manual_seed(0)
    image = torch.rand(6, 3, 16, 16, generator=gen) * 2 - 1
    raw = torch.rand(6, 3, 16, 16, generator=gen) * 2 - 1
    for config in (
        AugmentConfig(mode="fixed", probability=1.0),
        AugmentConfig(mode="fixed", probability=1.0, translate=0.0, scale=0.0),  # colour only
        AugmentConfig(mode="fixed", probability=0.5),  # some samples augmented, the same ones in both halves
    ):
        aug = Augmenter(config)
        torch.manual_seed(7)
        equal = aug(torch.cat([image, image], dim=1))
        assert equal.shape == (6, 6, 16, 16) and not torch.allclose(equal[:, :3], image)
        torch.testing.assert_close(equal[:, :3], equal[:, 3:], rtol=0, atol=0)
        torch.manual_seed(7)
        dual = aug(torch.cat([image, raw], dim=1))
        torch.manual_seed(7)
        alone_image = aug(image)
        torch.manual_seed(7)
        alone_raw = aug(raw)
        torch.testing.assert_close(dual[:, :3], alone_image, rtol=0, atol=1e-6)
        torch.testing.assert_close(dual[:, 3:], alone_raw, rtol=0, atol=1e-6)
        # and samples get different transforms
        assert not torch.allclose(equal[0, :3] - image[0], equal[1, :3] - image[1])
    with pytest.raises(ValueError, match="RGB"):
        Augmenter(AugmentConfig(mode="fixed", probability=1.0))(torch.zeros(2, 4, 8, 8))


def test_r1_sums_the_penalties_of_every_input_tensor():
    x = torch.randn(3, 3, 4, 4, requires_grad=True)
    y = torch.randn(3, 3, 2, 2, requires_grad=True)
    a, b = torch.randn(1, 3, 4, 4), torch.randn(1, 3, 2, 2)
    logits = (x * a).sum(dim=[1, 2, 3]) + (y * b).sum(dim=[1, 2, 3])
    torch.testing.assert_close(losses.r1_penalty(logits, x, y), a.square().sum() + b.square().sum())


def test_rng_state_round_trip():
    import random

    import numpy as np

    state = rng_state()
    a = (torch.rand(3), np.random.rand(3), random.random())
    set_rng_state(state)
    b = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]


def test_checkpoint_reading_is_safe_and_errors_are_one_line(tmp_path):
    good = tmp_path / "step-000000001.ckpt"
    torch.save({"step": 1, "pipeline": {"w": torch.ones(2)}, "optimizers": {}, "rng": rng_state()}, good)
    assert load_checkpoint_file(good)["step"] == 1
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    with pytest.raises(UserError, match="truncated") as err:
        load_checkpoint_file(truncated)
    assert "\n" not in str(err.value)

    class Payload:  # a pickle that would run code on a plain torch.load
        def __reduce__(self):
            return (print, ("pwned",))

    evil = tmp_path / "evil.ckpt"
    torch.save({"step": 1, "pipeline": Payload(), "optimizers": {}}, evil)
    with pytest.raises(UserError):
        load_checkpoint_file(evil)
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(UserError, match="lacks"):
        load_checkpoint_file(foreign)
    with pytest.raises(UserError, match="does not exist"):
        load_checkpoint_file(tmp_path / "missing.ckpt")


def test_a_checkpoint_with_a_nerfstudio_scheduler_reads_back(tmp_path):
    """nerfstudio's schedulers keep numpy floats in their state, which a safe load refuses unless saved as numbers."""
    from nerfstudio.engine.schedulers import ExponentialDecaySchedulerConfig

    def scheduler():
        optimizer = torch.optim.Adam([torch.nn.Parameter(torch.ones(1))], lr=0.01)
        return ExponentialDecaySchedulerConfig(lr_final=0.001, max_steps=10).setup().get_scheduler(optimizer, 0.01)

    trained = scheduler()
    for _ in range(4):
        trained.optimizer.step()
        trained.step()
    assert any(isinstance(v, np.generic) for v in trained.state_dict()["_last_lr"])  # what made it unreadable
    path = tmp_path / "step-000000004.ckpt"
    save_checkpoint_file(path, {"step": 4, "pipeline": {}, "optimizers": {}, "schedulers": {"g": trained.state_dict()}})
    resumed = scheduler()
    resumed.load_state_dict(load_checkpoint_file(path)["schedulers"]["g"])
    assert resumed.last_epoch == 4 and resumed.get_last_lr() == pytest.approx(trained.get_last_lr(), rel=1e-12)
    resumed.step()
    trained.step()
    assert resumed.get_last_lr() == pytest.approx(trained.get_last_lr(), rel=1e-12)


@pytest.fixture
def tiny_trainer(tmp_path):
    import copy

    from triplane_gan_ns.method_configs.triplane_gan import triplane_gan_tiny

    cfg = copy.deepcopy(triplane_gan_tiny.config)
    cfg.machine.device_type = "cpu"
    cfg.output_dir = tmp_path
    cfg.vis = "tensorboard"
    cfg.max_consecutive_bad_steps = 3
    cfg.set_timestamp()
    trainer = cfg.setup(local_rank=0, world_size=1)
    trainer.setup()
    return trainer


def test_non_finite_steps_are_skipped_then_stop_the_run(tiny_trainer, monkeypatch):
    model = tiny_trainer.pipeline.gan_model
    original = tiny_trainer.pipeline.gan_losses

    def poisoned(step, phase):
        loss_dict, metrics = original(step, phase)
        if phase == "generator":
            loss_dict = {k: v * float("nan") for k, v in loss_dict.items()}
        return loss_dict, metrics

    monkeypatch.setattr(tiny_trainer.pipeline, "gan_losses", poisoned)
    g_before = [p.detach().clone() for p in model.generator.parameters()]
    d_before = [p.detach().clone() for p in model.discriminator.parameters()]
    tiny_trainer.train_iteration(0)
    assert all(torch.equal(a, b) for a, b in zip(g_before, model.generator.parameters()))
    assert not all(torch.equal(a, b) for a, b in zip(d_before, model.discriminator.parameters()))
    assert all(torch.isfinite(p).all() for p in model.generator.parameters())
    tiny_trainer.train_iteration(1)
    with pytest.raises(UserError, match="3 consecutive non-finite steps"):
        tiny_trainer.train_iteration(2)


def test_a_good_step_resets_the_bad_step_count(tiny_trainer, monkeypatch):
    original = tiny_trainer.pipeline.gan_losses
    bad_steps = {0, 1, 3, 4}

    def sometimes_nan(step, phase):
        loss_dict, metrics = original(step, phase)
        if step in bad_steps:
            loss_dict = {k: v * float("inf") for k, v in loss_dict.items()}
        return loss_dict, metrics

    monkeypatch.setattr(tiny_trainer.pipeline, "gan_losses", sometimes_nan)
    for step in range(5):  # never 3 bad in a row
        tiny_trainer.train_iteration(step)
    assert tiny_trainer._bad_steps == 2



_ALLOCATOR_SCRIPT = """
import ctypes, resource, sys, torch
from triplane_gan_ns.allocator import keep_freed_memory

class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]

mallinfo = ctypes.CDLL(None).mallinfo2
mallinfo.restype = MallInfo2
applied = keep_freed_memory() if sys.argv[1] == "1" else None
before = mallinfo()
block = torch.ones(48 << 18)  # 48 MiB: above glibc's largest mmap threshold (32 MiB)
mapped = (mallinfo().hblkhd - before.hblkhd) >> 20
del block
kept = mallinfo().fordblks >> 20

def work():  # short-lived tensors of a few MiB, as in a training step
    for mib in (1, 3, 6, 12, 24, 2, 5):
        t = torch.ones(mib << 18)
        u = (t * 2).exp_()
        del t, u

for _ in range(3):  # the heap grows to what a round needs
    work()
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(8):
    work()
print(applied, mapped, kept, (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / 8)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_kept_freed_memory_is_reused_without_page_faults():
    """After ``keep_freed_memory`` a 48 MiB tensor comes from the heap and its memory stays there once freed
    (glibc's defaults map it and unmap it), and rounds of 53 MiB of short-lived tensors (27 136 pages written)
    fault no page in anew once the heap has grown."""

    def run(apply: str):
        out = subprocess.run([sys.executable, "-c", _ALLOCATOR_SCRIPT, apply], capture_output=True, text=True, check=True)
        applied, mapped, kept, faults = out.stdout.split()
        return applied, int(mapped), int(kept), float(faults)

    applied, mapped, kept, faults = run("1")
    assert (applied, mapped, faults) == ("True", 0, 0.0)
    assert kept >= 48
    _, mapped, kept, _ = run("0")  # the premise: by default the block is mapped, and unmapped when freed
    assert mapped == 48 and kept < 48
