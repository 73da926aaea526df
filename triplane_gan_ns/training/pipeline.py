"""GAN pipeline: real batches from the datamanager, fakes from the model, StyleGAN2/EG3D losses per phase.

The trainer calls ``gan_losses(step, "discriminator")`` and ``gan_losses(step, "generator")`` in turn, steps
the matching optimizer, then ``after_step(step)`` (generator EMA, adaptive augmentation).  This class decides
what each phase computes:

* discriminator: real photos (label y) vs ``views_per_latent`` renders of latents of sampled classes, logistic
  loss; lazy R1 on the real photos every ``r1_interval`` steps;
* generator: non-saturating loss over all rendered views, optional style mixing, and EG3D's density
  regularisation (nearby points should have similar density) every ``density_reg_interval`` steps.

Both phases see images through the same blur (faded out early in training) and differentiable augmentation.
With dual discrimination (the model's ``dual_discrimination``) every image is a 6-channel stack: a render is its
super-resolved image with its neural rendering upsampled, a photo is itself with its copy resized down to the
current neural resolution and back up; blur and augmentation treat both halves alike, and R1 differentiates
with respect to the photo and its low-resolution copy.
"""

from __future__ import annotations

import functools

import math
from dataclasses import dataclass, field
from typing import Dict, Literal, Optional, Tuple, Type

import kornia
import torch
import torch.distributed as dist
from jaxtyping import Float, Int
from nerfstudio.pipelines.base_pipeline import VanillaPipeline, VanillaPipelineConfig
from torch import Tensor

from triplane_gan_ns.data.datamanager import GanDataManager, GanDataManagerConfig
from triplane_gan_ns.errors import UserError
from triplane_gan_ns.model import TriplaneGANModel, TriplaneGANModelConfig
from triplane_gan_ns.training import losses
from triplane_gan_ns.training.augment import AugmentConfig, Augmenter
from triplane_gan_ns.training.ema import ema_beta, update_ema

Phase = Literal["discriminator", "generator"]
VIEWS_WITHOUT_DATA = 8
"""Cameras shown as the training views when the data folder is missing (an orbit of the pose sampler's)."""


@dataclass
class GanPipelineConfig(VanillaPipelineConfig):
    """Adversarial training of the triplane generator against the (multi-view) discriminator."""

    _target: Type = field(default_factory=lambda: GanPipeline)
    datamanager: GanDataManagerConfig = field(default_factory=GanDataManagerConfig)
    """Real images and labels."""
    model: TriplaneGANModelConfig = field(default_factory=TriplaneGANModelConfig)
    """Generator, discriminator and pose sampler."""
    r1_gamma: float = 1.0
    """Weight of the R1 penalty on real images (EG3D: 1 FFHQ, 0.3 ShapeNet, 5 AFHQ); 0 disables it."""
    r1_interval: int = 16
    """Lazy regularisation: R1 every this many steps, scaled up by the interval."""
    style_mixing_prob: float = 0.0
    """Probability of style mixing in the generator step (StyleGAN2: 0.9; EG3D: 0)."""
    ema_half_life_kimg: float = 10.0
    """Half-life of the generator EMA in thousands of images."""
    ema_rampup: float = 0.05
    """EMA ramp-up: the half-life is at most this fraction of the images seen (0 = off)."""
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    """Differentiable augmentation of everything the discriminator sees."""
    density_reg: float = 0.25
    """Weight of the density smoothness regulariser (EG3D's density_reg); 0 disables it."""
    density_reg_interval: int = 4
    """Steps between density regularisation (its loss is scaled by the interval)."""
    density_reg_distance: float = 0.004
    """Perturbation of the regularised points, as a fraction of the scene bound."""
    density_reg_points: int = 1000
    """Random points per latent for the density regulariser."""
    blur_init_sigma: float = 0.0
    """Gaussian blur (pixels) of real and fake images at the start of training (EG3D: 10); 0 = off."""
    blur_fade_kimg: float = 200.0
    """Thousands of images over which the blur fades to zero."""
    neural_resolution_final: Optional[int] = None
    """If set, the neural rendering resolution grows linearly from the generator's to this value."""
    neural_resolution_fade_kimg: float = 1000.0
    """Thousands of images over which the neural rendering resolution grows."""


class GanPipeline(VanillaPipeline):
    config: GanPipelineConfig
    datamanager: GanDataManager

    def __init__(
        self,
        config: GanPipelineConfig,
        device: str,
        test_mode: Literal["test", "val", "inference"] = "val",
        world_size: int = 1,
        local_rank: int = 0,
        grad_scaler=None,
    ) -> None:
        # No DistributedDataParallel wrapper: a GAN step runs several forwards through two networks, so the
        # trainer averages gradients across ranks itself (all_reduce_grads) after each backward.
        super().__init__(config, device, test_mode, world_size=1, local_rank=local_rank, grad_scaler=grad_scaler)
        self.world_size = world_size
        if world_size > 1:  # shard the data between ranks
            self.datamanager.world_size = world_size
            self.datamanager.setup_train()
        if self.datamanager.without_data:  # the viewer draws the training cameras: show the generator's own
            self.datamanager.train_dataset.set_views(self.gan_model.orbit_cameras(VIEWS_WITHOUT_DATA).to("cpu"))
        self.augmenter = Augmenter(config.augment).to(device)
        if self.distributed:
            for tensor in self.state_dict().values():  # every rank starts from rank 0's weights
                dist.broadcast(tensor, src=0)

    @property
    def distributed(self) -> bool:
        return self.world_size > 1 and dist.is_available() and dist.is_initialized()

    @property
    def gan_model(self) -> TriplaneGANModel:
        return self.model  # type: ignore[return-value]

    # ---- schedules --------------------------------------------------------------------------------------
    def images_seen(self, step: int) -> int:
        """Real images shown to the discriminator before ``step`` (all ranks)."""
        return step * self.datamanager.config.batch_size * self.world_size

    def blur_sigma(self, step: int) -> float:
        c = self.config
        if c.blur_init_sigma <= 0:
            return 0.0
        fade = 1.0 - self.images_seen(step) / max(c.blur_fade_kimg * 1000, 1)
        return max(fade, 0.0) * c.blur_init_sigma

    def neural_resolution(self, step: int) -> int:
        start = self.config.model.generator.neural_resolution
        final = self.config.neural_resolution_final
        if final is None:
            return start
        t = min(self.images_seen(step) / max(self.config.neural_resolution_fade_kimg * 1000, 1), 1.0)
        return int(round((start + (final - start) * t) / 2)) * 2

    # ---- the discriminator as the losses see it -----------------------------------------------------------
    def _prepare(self, images: Float[Tensor, "b c h w"], step: int) -> Float[Tensor, "b c h w"]:
        """[0, 1] discriminator images (RGB triples stacked along channels) -> blurred, augmented [-1, 1] input."""
        x = images * 2 - 1
        sigma = self.blur_sigma(step)
        if sigma > 0:
            size = min(2 * math.floor(3 * sigma) + 1, (x.shape[-1] // 2) * 2 - 1)
            x = kornia.filters.gaussian_blur2d(x, (size, size), (sigma, sigma))
        return self.augmenter(x)

    def _fake_input(self, fake: Dict[str, Tensor], step: int) -> Tensor:
        """The discriminator's input for rendered views: image (and upsampled neural rendering), prepared."""
        return self._prepare(self.gan_model.discriminator_images(fake["image"], fake.get("image_raw")), step)

    def _real_images(
        self, photos: Float[Tensor, "b 3 h w"], step: int, requires_grad: bool = False
    ) -> Tuple[Float[Tensor, "b c h w"], Tuple[Tensor, ...]]:
        """(un-prepared discriminator images of real photos, the leaf tensors R1 differentiates).

        With dual discrimination the photo's raw half is its copy at the current neural resolution, upsampled
        back exactly as a render's neural image is; the copy is a leaf of its own, as the neural rendering is
        an input of its own on the generated side."""
        model = self.gan_model
        photo = photos.detach().requires_grad_(requires_grad)
        if not model.dual_discrimination:
            return photo, (photo,)
        raw = model.neural_copy(photo.detach(), self.neural_resolution(step)).requires_grad_(requires_grad)
        return model.discriminator_images(photo, raw), (photo, raw)

    def _fake_labels(self, batch_size: int) -> Int[Tensor, "batch"]:
        """Class labels drawn from the data's class frequencies."""
        labels = self.datamanager.train_dataset.labels
        idx = torch.randint(len(labels), (batch_size,))
        return labels[idx].to(self.device)

    def _generate(self, batch: int, step: int, update_w_avg: bool = False, mixing: bool = False):
        model = self.gan_model
        z = torch.randn(batch, model.generator.backbone.z_dim, device=self.device)
        labels = self._fake_labels(batch)
        mixing_z, cutoff = None, None
        num_ws = model.generator.backbone.num_ws
        if mixing and self.config.style_mixing_prob > 0 and num_ws > 1:
            if torch.rand(()) < self.config.style_mixing_prob:
                mixing_z = torch.randn_like(z)
                cutoff = int(torch.randint(1, num_ws, ()))
        views = model.discriminator.views_per_latent
        out = model.generate(
            z,
            labels,
            views_per_latent=views,
            update_w_avg=update_w_avg,
            mixing_z=mixing_z,
            mixing_cutoff=cutoff,
            neural_resolution=self.neural_resolution(step),
        )
        return out, labels.repeat_interleave(views)

    # ---- the two phases -----------------------------------------------------------------------------------
    def gan_losses(self, step: int, phase: Phase) -> Tuple[Dict[str, Tensor], Dict[str, Tensor]]:
        if phase == "discriminator":
            return self._discriminator_losses(step)
        return self._generator_losses(step)

    def _generator_losses(self, step: int) -> Tuple[Dict[str, Tensor], Dict[str, Tensor]]:
        model = self.gan_model
        batch = self.datamanager.config.batch_size
        model.discriminator.requires_grad_(False)
        try:
            fake, labels = self._generate(batch, step, update_w_avg=True, mixing=True)
            logits = model.discriminator.score_generated(self._fake_input(fake, step), labels)
        finally:
            model.discriminator.requires_grad_(True)
        loss_dict = {"generator": losses.generator_loss(logits)}
        metrics = {"fake_score_g": logits.detach().mean()}
        c = self.config
        if c.density_reg > 0 and step % c.density_reg_interval == 0:
            loss_dict["density_reg"] = self._density_regulariser(fake["planes"]) * c.density_reg * c.density_reg_interval
        return loss_dict, metrics

    def _density_regulariser(self, planes: Tensor) -> Tensor:
        """Mean |sigma(x) - sigma(x + d)| at random points x of every latent's triplane, on the decoder's raw
        (pre-activation, unmasked) density as in EG3D, so it also acts where the softplus is flat."""
        field = self.gan_model.generator.field
        bound = self.gan_model.generator.config.scene_bound
        batch = planes.shape[0]
        n = self.config.density_reg_points
        points = (torch.rand(batch, n, 3, device=planes.device) * 2 - 1) * bound
        perturbed = points + torch.randn_like(points) * self.config.density_reg_distance * bound
        density = field.batched_density(planes, torch.cat([points, perturbed], dim=1), raw=True)
        return (density[:, :n] - density[:, n:]).abs().mean()

    def _discriminator_losses(self, step: int) -> Tuple[Dict[str, Tensor], Dict[str, Tensor]]:
        model = self.gan_model
        real = self.datamanager.next_train(step)
        batch = real["image"].shape[0]
        with torch.no_grad():
            fake, fake_labels = self._generate(batch, step)
        do_r1 = self.config.r1_gamma > 0 and step % self.config.r1_interval == 0
        real_images, real_leaves = self._real_images(real["image"], step, requires_grad=do_r1)
        # R1 differentiates the discriminator twice, which compiled graphs cannot: its forward runs eagerly
        discriminate = model.discriminator
        if do_r1:
            discriminate = functools.partial(type(model.discriminator).forward, model.discriminator)
        real_logits = discriminate(self._prepare(real_images, step), real["label"])
        fake_logits = model.discriminator.score_generated(self._fake_input(fake, step), fake_labels)
        self.augmenter.accumulate(real_logits)
        loss_dict = {"discriminator": losses.discriminator_loss(real_logits, fake_logits)}
        metrics = {
            "real_score": real_logits.detach().mean(),
            "fake_score_d": fake_logits.detach().mean(),
            "augment_p": self.augmenter.p.detach().clone(),
            "blur_sigma": torch.tensor(self.blur_sigma(step)),
            "skipped_files": torch.tensor(float(self.datamanager.skipped_files)),
        }
        if do_r1:
            # gradient w.r.t. the un-augmented photo and, with dual discrimination, its low-resolution copy (the
            # augmentation is part of the discriminator here); the images in [0, 1] are half the scale of the
            # discriminator's [-1, 1] input, hence the 1/4
            penalty = losses.r1_penalty(real_logits, *real_leaves) / 4
            loss_dict["r1"] = penalty * (self.config.r1_gamma / 2) * self.config.r1_interval
            metrics["r1_penalty"] = penalty.detach()
        return loss_dict, metrics

    @torch.no_grad()
    def after_step(self, step: int) -> None:
        """After both optimizer steps: update the generator EMA and the augmentation probability."""
        model = self.gan_model
        images = self.datamanager.config.batch_size * self.world_size
        beta = ema_beta(images, self.config.ema_half_life_kimg, self.config.ema_rampup, self.images_seen(step + 1))
        if self.distributed:  # running averages of w and the ADA statistic: merged / mean / sum over ranks
            merged = set()
            backbone = model.generator.backbone
            if hasattr(backbone, "all_reduce_w_avg"):  # per-class averages weighed by what each rank has seen
                backbone.all_reduce_w_avg()
                merged = {id(backbone.w_avg), id(backbone.w_avg_count)}
            for buffer in model.generator.buffers():
                if buffer.is_floating_point() and id(buffer) not in merged:
                    dist.all_reduce(buffer)
                    buffer /= self.world_size
            for stat in (self.augmenter.sign_sum, self.augmenter.sign_count):
                dist.all_reduce(stat)
        update_ema(model.generator_ema, model.generator, beta)
        self.augmenter.update(step, images)

    def load_pipeline(self, loaded_state: Dict[str, Tensor], step: int) -> None:
        """Load a checkpoint; one trained with the other dual-discrimination setting is named as such."""
        own = self.state_dict()
        for key, value in loaded_state.items():
            key = key[len("module.") :] if key.startswith("module.") else key
            if key.startswith("_model.discriminator.") and key.endswith("from_rgb.weight") and key in own:
                theirs, ours = value.shape[1], own[key].shape[1]
                if theirs != ours and {theirs, ours} == {3, 6}:
                    raise UserError(
                        f"the checkpoint's discriminator takes {theirs} channels and this configuration's {ours}: "
                        f"resume it with --pipeline.model.dual-discrimination {theirs == 6}"
                    )
        super().load_pipeline(loaded_state, step)

    def get_train_loss_dict(self, step: int):
        raise NotImplementedError("GanTrainer calls gan_losses(step, phase) instead")
