"""Presets registered with nerfstudio: ``ns-train triplane-gan`` (paper scale) and ``triplane-gan-tiny`` (CPU).

Only assembles configs; every class comes from ``triplane_gan_ns``.
"""

from __future__ import annotations

import torch
from nerfstudio.configs.base_config import LoggingConfig, LocalWriterConfig, MachineConfig, ViewerConfig
from triplane_gan_ns.training.augment import AugmentConfig
from triplane_gan_ns.training.optimizers import AdamBetasOptimizerConfig
from nerfstudio.plugins.types import MethodSpecification

from triplane_gan_ns.backbones.stylegan2 import StyleGAN2BackboneConfig
from triplane_gan_ns.data.datamanager import GanDataManagerConfig
from triplane_gan_ns.data.renders_dataparser import RendersDataParserConfig
from triplane_gan_ns.discriminators.multiview import MultiViewDiscriminatorConfig
from triplane_gan_ns.discriminators.stylegan2_resnet import StyleGAN2ResnetDiscriminatorConfig
from triplane_gan_ns.errors import install_excepthook
from triplane_gan_ns.fields.triplane import TriplaneFieldConfig
from triplane_gan_ns.generator import TriplaneGeneratorConfig
from triplane_gan_ns.model import TriplaneGANModelConfig
from triplane_gan_ns.superresolution import SuperResolutionConfig
from triplane_gan_ns.training.pipeline import GanPipelineConfig
from triplane_gan_ns.training.trainer import GanTrainerConfig

install_excepthook()

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _optimizers(g_lr: float, d_lr: float) -> dict:
    """Separate Adam per network with StyleGAN2's betas (0, 0.99)."""
    return {
        "generator": {"optimizer": AdamBetasOptimizerConfig(lr=g_lr, eps=1e-8, betas=(0.0, 0.99)), "scheduler": None},
        "discriminator": {"optimizer": AdamBetasOptimizerConfig(lr=d_lr, eps=1e-8, betas=(0.0, 0.99)), "scheduler": None},
    }


triplane_gan = MethodSpecification(
    config=GanTrainerConfig(
        method_name="triplane-gan",
        max_num_iterations=500_000,
        steps_per_save=2000,
        mixed_precision=False,
        machine=MachineConfig(device_type=DEVICE),
        vis="tensorboard",
        pipeline=GanPipelineConfig(
            datamanager=GanDataManagerConfig(
                dataparser=RendersDataParserConfig(), resolution=128, batch_size=32, num_workers=8, cache_images=False
            ),
            model=TriplaneGANModelConfig(
                generator=TriplaneGeneratorConfig(
                    backbone=StyleGAN2BackboneConfig(
                        z_dim=512, w_dim=512, plane_channels=32, plane_resolution=256, extra_blocks=True
                    ),
                    field=TriplaneFieldConfig(hidden_dim=64, num_hidden_layers=3, feature_dim=32),
                    neural_resolution=64,
                    num_coarse_samples=48,
                    num_importance_samples=48,
                    superresolution=SuperResolutionConfig(channels=128),
                ),
                discriminator=MultiViewDiscriminatorConfig(num_views=3, image=StyleGAN2ResnetDiscriminatorConfig()),
            ),
            r1_gamma=1.0,
            blur_init_sigma=10.0,
            blur_fade_kimg=200.0,
            augment=AugmentConfig(mode="ada"),
        ),
        optimizers=_optimizers(0.0025, 0.002),
    ),
    description="Class-conditional triplane GAN from unposed photos (Shen & Wang), paper configuration.",
)

triplane_gan_tiny = MethodSpecification(
    config=GanTrainerConfig(
        method_name="triplane-gan-tiny",
        max_num_iterations=300,
        steps_per_save=100,
        mixed_precision=False,
        machine=MachineConfig(device_type=DEVICE, seed=0),
        vis="tensorboard",
        logging=LoggingConfig(steps_per_log=10, local_writer=LocalWriterConfig(enable=True)),
        viewer=ViewerConfig(quit_on_train_completion=True, websocket_host="127.0.0.1"),
        pipeline=GanPipelineConfig(
            datamanager=GanDataManagerConfig(
                dataparser=RendersDataParserConfig(), resolution=32, batch_size=4, num_workers=0, cache_images=True
            ),
            model=TriplaneGANModelConfig(
                generator=TriplaneGeneratorConfig(
                    backbone=StyleGAN2BackboneConfig(
                        z_dim=64,
                        w_dim=64,
                        mapping_layers=2,
                        plane_channels=8,
                        plane_resolution=32,
                        channel_base=1024,
                        channel_max=64,
                    ),
                    field=TriplaneFieldConfig(hidden_dim=32, num_hidden_layers=2, feature_dim=8),
                    neural_resolution=32,
                    num_coarse_samples=16,
                    num_importance_samples=16,
                ),
                discriminator=MultiViewDiscriminatorConfig(
                    num_views=3, image=StyleGAN2ResnetDiscriminatorConfig(channel_base=1024, channel_max=64)
                ),
                eval_num_rays_per_chunk=4096,
            ),
            r1_gamma=1.0,
            r1_interval=4,
            ema_half_life_kimg=0.5,
            augment=AugmentConfig(mode="none"),
        ),
        optimizers=_optimizers(0.0025, 0.002),
    ),
    description="Tiny triplane GAN for CPU on the embedded analytic-shapes data (minutes, not days).",
)
