"""GAN pipeline: real batches from the datamanager, fakes from the model, StyleGAN2 losses per phase.

The trainer calls ``gan_losses(step, "discriminator")`` and ``gan_losses(step, "generator")`` in turn and
steps the matching optimizer; this class decides what each phase computes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Literal, Tuple, Type

import torch
from nerfstudio.pipelines.base_pipeline import VanillaPipeline, VanillaPipelineConfig
from torch import Tensor

from triplane_gan_ns.data.datamanager import GanDataManager, GanDataManagerConfig
from triplane_gan_ns.model import TriplaneGANModel, TriplaneGANModelConfig
from triplane_gan_ns.training import losses

Phase = Literal["discriminator", "generator"]


@dataclass
class GanPipelineConfig(VanillaPipelineConfig):
    """Adversarial training of the triplane generator against the image discriminator."""

    _target: Type = field(default_factory=lambda: GanPipeline)
    datamanager: GanDataManagerConfig = field(default_factory=GanDataManagerConfig)
    """Real images and labels."""
    model: TriplaneGANModelConfig = field(default_factory=TriplaneGANModelConfig)
    """Generator, discriminator and pose sampler."""
    r1_gamma: float = 1.0
    """Weight of the R1 penalty on real images (EG3D: 1 FFHQ, 0.3 ShapeNet, 5 AFHQ); 0 disables it."""
    r1_interval: int = 16
    """Lazy regularisation: R1 every this many steps, scaled up by the interval."""


class GanPipeline(VanillaPipeline):
    config: GanPipelineConfig
    datamanager: GanDataManager

    @property
    def gan_model(self) -> TriplaneGANModel:
        return self.model  # type: ignore[return-value]

    def _fake_labels(self, batch_size: int) -> Tensor:
        """Class labels drawn from the data's class frequencies."""
        labels = self.datamanager.train_dataset.labels
        idx = torch.randint(len(labels), (batch_size,))
        return labels[idx].to(self.device)

    def gan_losses(self, step: int, phase: Phase) -> Tuple[Dict[str, Tensor], Dict[str, Tensor]]:
        model = self.gan_model
        if phase == "discriminator":
            return self._discriminator_losses(step, model)
        return self._generator_losses(step, model)

    def _generator_losses(self, step: int, model: TriplaneGANModel) -> Tuple[Dict[str, Tensor], Dict[str, Tensor]]:
        batch = self.datamanager.config.batch_size
        model.discriminator.requires_grad_(False)
        z = torch.randn(batch, model.generator.backbone.z_dim, device=self.device)
        labels = self._fake_labels(batch)
        fake = model.generate(z, labels, update_w_avg=True)
        logits = model.discriminator(fake["image"] * 2 - 1, labels)
        model.discriminator.requires_grad_(True)
        loss = losses.generator_loss(logits)
        return {"generator": loss}, {"fake_score": logits.detach().mean()}

    def _discriminator_losses(
        self, step: int, model: TriplaneGANModel
    ) -> Tuple[Dict[str, Tensor], Dict[str, Tensor]]:
        real = self.datamanager.next_train(step)
        batch = real["image"].shape[0]
        with torch.no_grad():
            z = torch.randn(batch, model.generator.backbone.z_dim, device=self.device)
            fake_labels = self._fake_labels(batch)
            fake = model.generate(z, fake_labels)
        do_r1 = self.config.r1_gamma > 0 and step % self.config.r1_interval == 0
        real_images = (real["image"] * 2 - 1).detach().requires_grad_(do_r1)
        real_logits = model.discriminator(real_images, real["label"])
        fake_logits = model.discriminator(fake["image"] * 2 - 1, fake_labels)
        loss_dict = {"discriminator": losses.discriminator_loss(real_logits, fake_logits)}
        metrics = {"real_score": real_logits.detach().mean(), "fake_score_d": fake_logits.detach().mean()}
        if do_r1:
            penalty = losses.r1_penalty(real_logits, real_images)
            loss_dict["r1"] = penalty * (self.config.r1_gamma / 2) * self.config.r1_interval
            metrics["r1_penalty"] = penalty.detach()
        return loss_dict, metrics

    def get_train_loss_dict(self, step: int):
        raise NotImplementedError("GanTrainer calls gan_losses(step, phase) instead")
