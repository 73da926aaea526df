"""Two-stage Pivotal Tuning Inversion (Roich et al.) of one photo into the 3D generator, from one fixed camera.

Stage 1 (latent): starting from the mean w of 10,000 latents of the class (sampled for this, as PTI does;
not the training's running average), optimise w (one vector, or one per layer with ``w_plus``) and,
optionally, the generator's constant noise maps, so that the rendering from the fixed camera matches the
photo under perceptual + pixel L2 loss; noise maps are kept Gaussian by a multi-scale autocorrelation penalty;
the learning rate ramps up, then down with a cosine.

Images are in [0, 1] throughout; the pixel L2 is the mean squared error on the [-1, 1] scale the generator
and PTI's weights use (4 times that on [0, 1]); the perceptual distances take [0, 1] images and rescale them
to what their networks expect (LPIPS: [-1, 1]).

Stage 2 (generator): freeze that pivot w and fine-tune the generator's weights (a copy; the loaded model is
never changed) with the same loss, stopping early when the perceptual distance is low enough.  The optional
locality regulariser keeps the tuned generator's renders of random latents near the pivot equal to the
original generator's.

The camera can be any pose, as long as it stays the same for the whole inversion (the paper's Fig. 3).
``search_camera`` helps choose it: a few stage 1 steps at each candidate view from the same start, the loss of
each view at the end (the lowest is where the photo was most likely taken from).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from jaxtyping import Float
from nerfstudio.cameras.cameras import Cameras
from torch import Tensor, nn

from triplane_gan_ns.generator import TriplaneGenerator
from triplane_gan_ns.model import TriplaneGANModel


@dataclass
class InversionConfig:
    """Settings of both PTI stages (defaults: the PTI paper)."""

    latent_steps: int = 450
    """Stage 1 steps (optimising the latent)."""
    latent_lr: float = 0.01
    """Stage 1 peak learning rate."""
    w_plus: bool = False
    """Optimise one w per layer (W+) instead of a single w."""
    optimize_noise: bool = True
    """Also optimise the constant noise maps in stage 1."""
    noise_regularization: float = 1e5
    """Weight of the noise autocorrelation penalty."""
    initial_noise_factor: float = 0.05
    """Noise added to w early in stage 1, as a fraction of the spread of w (decays to zero)."""
    noise_ramp_length: float = 0.75
    """Fraction of stage 1 over which that noise decays."""
    lr_rampdown_length: float = 0.25
    """Fraction of stage 1 at the end with a cosine ramp-down of the learning rate."""
    lr_rampup_length: float = 0.05
    """Fraction of stage 1 at the start with a linear ramp-up of the learning rate."""
    generator_steps: int = 350
    """Stage 2 steps (pivotal tuning of the generator)."""
    generator_lr: float = 3e-4
    """Stage 2 Adam learning rate on all generator weights."""
    perceptual_weight: float = 1.0
    """Weight of the perceptual distance."""
    l2_weight: float = 1.0
    """Weight of the pixel mean squared error (on images scaled to [-1, 1])."""
    stop_perceptual: float = 0.06
    """Stage 2 stops early once the perceptual distance is at most this."""
    locality_weight: float = 0.0
    """Weight of the locality regulariser (0 = off, as in PTI's default)."""
    locality_alpha: float = 30.0
    """Distance of the regulariser's latents from the pivot, towards the w of a random z (PTI: 30)."""
    locality_interval: int = 1
    """Apply the locality regulariser every this many stage 2 steps."""
    search_steps: int = 10
    """Stage 1 steps tried at each candidate view of the camera search (--camera-search of triplane-gan invert)."""
    seed: int = 0
    """Seed of the random parts (w noise, locality latents)."""


@dataclass
class InversionResult:
    ws: Tensor
    """The pivot latent [1, num_ws, w_dim]."""
    generator: TriplaneGenerator
    """The tuned copy of the generator."""
    stage1_image: Tensor
    """Rendering of the pivot by the original generator [1, 3, R, R]."""
    stage2_image: Tensor
    """Rendering of the pivot by the tuned generator [1, 3, R, R]."""
    start: Tensor
    """Where stage 1 started: the class's mean w, [1, num_ws, w_dim]."""
    losses: Dict[str, List[Dict[str, float]]] = field(default_factory=dict)
    """Per stage, one row of losses per step."""


Progress = Callable[[str, int, int, Dict[str, float]], None]


def _noise_buffers(generator: TriplaneGenerator) -> List[Tensor]:
    return [b for name, b in generator.backbone.named_buffers() if name.endswith("noise_const")]


def noise_regularization(noises: List[Tensor]) -> Tensor:
    """Sum over noise maps and scales of squared normalised autocorrelations at a one-pixel shift."""
    loss = torch.zeros(())
    for noise in noises:
        n = noise
        while True:
            loss = loss + (n * torch.roll(n, 1, dims=3)).mean().square() + (n * torch.roll(n, 1, dims=2)).mean().square()
            if n.shape[2] <= 8:
                break
            n = F.avg_pool2d(n, 2)
    return loss


def _normalise_noise(noises: List[Tensor]) -> None:
    with torch.no_grad():
        for n in noises:
            n.sub_(n.mean()).div_(n.square().mean().sqrt())


def pixel_l2(image: Float[Tensor, "b 3 h w"], target: Float[Tensor, "b 3 h w"]) -> Tensor:
    """Mean squared error of [0, 1] images measured on the [-1, 1] scale (PTI's L2)."""
    return F.mse_loss(image * 2 - 1, target * 2 - 1)


def _lr(step: int, steps: int, c: InversionConfig) -> float:
    t = step / max(steps, 1)
    ramp = min(1.0, (1.0 - t) / c.lr_rampdown_length)
    ramp = 0.5 - 0.5 * math.cos(ramp * math.pi)
    ramp = ramp * min(1.0, t / c.lr_rampup_length)
    return c.latent_lr * ramp


def class_mean_w(generator: TriplaneGenerator, class_index: int, gen: torch.Generator, device) -> Tuple[Tensor, float]:
    """(mean w of 10,000 latents of the class drawn from ``gen``, [w_dim]; root mean squared distance of those
    latents from it)."""
    backbone = generator.backbone
    with torch.no_grad():
        z = torch.randn(10000, backbone.z_dim, generator=gen).to(device)
        w_samples = generator.mapping(z, torch.full((10000,), class_index, device=device))[:, 0]
        w_start = w_samples.mean(0)
        w_std = (w_samples - w_start).square().sum(1).mean().sqrt().item()
    return w_start, w_std


def _loss_terms(perceptual: nn.Module, image: Tensor, target: Tensor) -> Dict[str, Tensor]:
    return {"perceptual": perceptual(image, target).mean(), "l2": pixel_l2(image, target)}


def _fit_latent(
    generator: TriplaneGenerator, target: Tensor, camera: Cameras, perceptual: nn.Module, c: InversionConfig,
    w_start: Tensor, w_noise_std: float, steps: int, noises: List[Tensor], gen: torch.Generator,
    report: Optional[Callable[[int, Dict[str, float]], None]] = None,
) -> Tuple[Tensor, List[Dict[str, float]]]:
    """Stage 1's optimisation of w (and of ``noises``) for ``steps`` steps from ``w_start``; w noise of
    ``w_noise_std`` times the configured factor early on.  Returns (w [1, 1 or num_ws, w_dim], one row per step)."""
    backbone = generator.backbone
    w_opt = w_start.view(1, 1, -1).repeat(1, backbone.num_ws if c.w_plus else 1, 1).requires_grad_(True)
    optimizer = torch.optim.Adam([w_opt] + noises, betas=(0.9, 0.999), lr=c.latent_lr)
    rows: List[Dict[str, float]] = []
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = _lr(step, steps, c)
        t = step / max(steps, 1)
        strength = w_noise_std * c.initial_noise_factor * max(0.0, 1.0 - t / c.noise_ramp_length) ** 2
        w_noise = torch.randn(w_opt.shape, generator=gen).to(target.device) * strength
        ws = (w_opt + w_noise).expand(1, backbone.num_ws, -1)
        image = generator.render(ws, camera, noise_mode="const")["image"]
        terms = _loss_terms(perceptual, image, target)
        loss = c.perceptual_weight * terms["perceptual"] + c.l2_weight * terms["l2"]
        if noises:
            terms["noise_reg"] = noise_regularization(noises)
            loss = loss + c.noise_regularization * terms["noise_reg"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if noises:
            _normalise_noise(noises)
        row = {k: float(v.detach()) for k, v in terms.items()} | {"loss": float(loss.detach()), "lr": optimizer.param_groups[0]["lr"]}
        rows.append(row)
        if report:
            report(step, row)
    return w_opt.detach(), rows


def search_camera(
    generator: TriplaneGenerator,
    target: Float[Tensor, "1 3 res res"],
    class_index: int,
    cameras: Sequence[Cameras],
    perceptual: nn.Module,
    config: InversionConfig,
    progress: Optional[Progress] = None,
) -> List[float]:
    """The loss of each camera after ``config.search_steps`` stage 1 steps from the class's mean w (no w noise,
    noise maps fixed, the same start for every camera): the photo was most likely taken from the lowest."""
    c = config
    generator = generator.eval().requires_grad_(False)
    w_start, _ = class_mean_w(generator, class_index, torch.Generator(device="cpu").manual_seed(c.seed), target.device)
    losses: List[float] = []
    for index, camera in enumerate(cameras):
        gen = torch.Generator(device="cpu").manual_seed(c.seed)
        w, _ = _fit_latent(generator, target, camera, perceptual, c, w_start, 0.0, c.search_steps, [], gen)
        with torch.no_grad():
            image = generator.render(w.expand(1, generator.backbone.num_ws, -1), camera, noise_mode="const")["image"]
            terms = _loss_terms(perceptual, image, target)
        losses.append(float(c.perceptual_weight * terms["perceptual"] + c.l2_weight * terms["l2"]))
        if progress:
            progress("camera search", index + 1, len(cameras), {"perceptual": float(terms["perceptual"]), "l2": float(terms["l2"])})
    return losses


def invert(
    generator: TriplaneGenerator,
    target: Float[Tensor, "1 3 res res"],
    class_index: int,
    camera: Cameras,
    perceptual: nn.Module,
    config: InversionConfig,
    progress: Optional[Progress] = None,
) -> InversionResult:
    """Invert ``target`` (in [0, 1], at the generator's output resolution) seen from ``camera``."""
    device = target.device
    c = config
    gen = torch.Generator(device="cpu").manual_seed(c.seed)
    labels = torch.tensor([class_index], device=device)

    def loss_terms(image: Tensor) -> Dict[str, Tensor]:
        return _loss_terms(perceptual, image, target)

    # ---- stage 1: the pivot latent -----------------------------------------------------------------------
    original = generator.eval().requires_grad_(False)
    backbone = original.backbone
    w_start, w_std = class_mean_w(original, class_index, gen, device)  # the class's mean w
    saved_noise = [b.detach().clone() for b in _noise_buffers(original)]
    noises = _noise_buffers(original) if c.optimize_noise else []
    for n in noises:
        n.requires_grad_(True)
    try:
        def report(step: int, row: Dict[str, float]) -> None:
            if progress:
                progress("latent", step + 1, c.latent_steps, row)

        w_opt, rows1 = _fit_latent(original, target, camera, perceptual, c, w_start, w_std, c.latent_steps, noises, gen, report)
        pivot = w_opt.expand(1, backbone.num_ws, -1).clone()
        tuned = copy.deepcopy(original)  # carries the optimised noise maps
    finally:
        with torch.no_grad():  # the loaded generator leaves unchanged
            for buf, saved in zip(_noise_buffers(original), saved_noise):
                buf.requires_grad_(False)
                buf.copy_(saved)
    for buf in _noise_buffers(tuned):
        buf.requires_grad_(False)
    with torch.no_grad():
        stage1_image = tuned.render(pivot, camera, noise_mode="const")["image"]

    # ---- stage 2: pivotal tuning of a copy of the generator ----------------------------------------------
    tuned.train(False)
    tuned.requires_grad_(True)
    optimizer = torch.optim.Adam(tuned.parameters(), lr=c.generator_lr)
    rows2: List[Dict[str, float]] = []
    for step in range(c.generator_steps):
        image = tuned.render(pivot, camera, noise_mode="const")["image"]
        terms = loss_terms(image)
        loss = c.perceptual_weight * terms["perceptual"] + c.l2_weight * terms["l2"]
        if c.locality_weight > 0 and step % c.locality_interval == 0:
            with torch.no_grad():
                w_z = original.mapping(torch.randn(1, backbone.z_dim, generator=gen).to(device), labels)
                direction = w_z - pivot
                nearby = pivot + c.locality_alpha * direction / direction.norm(dim=-1, keepdim=True)
                reference = original.render(nearby, camera, noise_mode="const")["image"]
            local = tuned.render(nearby, camera, noise_mode="const")["image"]
            terms["locality"] = perceptual(local, reference).mean() + pixel_l2(local, reference)
            loss = loss + c.locality_weight * terms["locality"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        row = {k: float(v.detach()) for k, v in terms.items()} | {"loss": float(loss.detach())}
        rows2.append(row)
        if progress:
            progress("generator", step + 1, c.generator_steps, row)
        if row["perceptual"] <= c.stop_perceptual:
            break
    tuned.requires_grad_(False).eval()
    with torch.no_grad():
        stage2_image = tuned.render(pivot, camera, noise_mode="const")["image"]
    return InversionResult(
        ws=pivot,
        generator=tuned,
        stage1_image=stage1_image,
        stage2_image=stage2_image,
        start=w_start.view(1, 1, -1).expand(1, backbone.num_ws, -1).clone(),
        losses={"latent": rows1, "generator": rows2},
    )


@torch.no_grad()
def guess_class(model: TriplaneGANModel, photo: torch.Tensor, chunk: int = 64) -> int:
    """The class whose conditioning makes the discriminator find the photo most real."""
    raw = model.neural_copy(photo, model.neural_resolution)
    images = model.discriminator_images(photo, raw) * 2 - 1  # what the discriminator saw of real photos
    scores = []
    for start in range(0, model.num_classes, chunk):
        labels = torch.arange(start, min(start + chunk, model.num_classes), device=photo.device)
        scores.append(model.discriminator(images.expand(len(labels), -1, -1, -1), labels))
    return int(torch.cat(scores).argmax())
