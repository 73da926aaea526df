"""Presets registered with nerfstudio:

* ``ns-train triplane-gan``: the paper's configuration on ImageNet-style class folders (or a prepared archive);
* ``ns-train triplane-gan-shapenet``: ShapeNet-style renders (SRN layout), EG3D's ShapeNet settings;
* ``ns-train triplane-gan-tiny``: minutes on a CPU, on the embedded analytic shapes (``make demo``);
* ``ns-train triplane-gan-tiny-long``: the same, trained twice as long with 8 + 8 samples per ray: the embedded
  classes' shapes, recognisable from every side, in 18-21 minutes on 2 CPU cores.

Only assembles configs; every class comes from ``triplane_gan_ns``.
"""

from __future__ import annotations

import copy

import torch
from nerfstudio.configs.base_config import LoggingConfig, MachineConfig, ViewerConfig
from nerfstudio.plugins.types import MethodSpecification

from triplane_gan_ns.backbones.stylegan2 import StyleGAN2BackboneConfig
from triplane_gan_ns.data.datamanager import GanDataManagerConfig
from triplane_gan_ns.data.imagenet_dataparser import ImageFolderDataParserConfig
from triplane_gan_ns.data.renders_dataparser import RendersDataParserConfig
from triplane_gan_ns.discriminators.multiview import MultiViewDiscriminatorConfig
from triplane_gan_ns.discriminators.stylegan2_resnet import StyleGAN2ResnetDiscriminatorConfig
from triplane_gan_ns.errors import install_excepthook
from triplane_gan_ns.fields.triplane import TriplaneFieldConfig
from triplane_gan_ns.generator import TriplaneGeneratorConfig
from triplane_gan_ns.model import TriplaneGANModelConfig
from triplane_gan_ns.superresolution import SuperResolutionConfig
from triplane_gan_ns.training.augment import AugmentConfig
from triplane_gan_ns.training.optimizers import AdamBetasOptimizerConfig
from triplane_gan_ns.training.pipeline import GanPipelineConfig
from triplane_gan_ns.training.progress import GanLocalWriterConfig
from triplane_gan_ns.training.trainer import GanTrainerConfig

# ns-train is nerfstudio's command; discovering this method is the only moment our code runs before it starts,
# so this is where a UserError raised during training is made a one-line message instead of a traceback.
install_excepthook()

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
LOOPBACK = "127.0.0.1"
"""Address the viewer of a training run listens on (``--viewer.websocket-host 0.0.0.0`` exposes it)."""


def _optimizers(g_lr: float, d_lr: float) -> dict:
    """Separate Adam per network with StyleGAN2's betas (0, 0.99)."""
    return {
        "generator": {"optimizer": AdamBetasOptimizerConfig(lr=g_lr, eps=1e-8, betas=(0.0, 0.99)), "scheduler": None},
        "discriminator": {
            "optimizer": AdamBetasOptimizerConfig(lr=d_lr, eps=1e-8, betas=(0.0, 0.99)),
            "scheduler": None,
        },
    }


def _paper_model() -> TriplaneGANModelConfig:
    """StyleGAN2 backbone with the extra blocks, 3x32x256² planes, 3x64 decoder, 3 views per latent."""
    return TriplaneGANModelConfig(
        generator=TriplaneGeneratorConfig(
            backbone=StyleGAN2BackboneConfig(z_dim=512, w_dim=512, plane_channels=32, plane_resolution=256),
            field=TriplaneFieldConfig(hidden_dim=64, num_hidden_layers=3, feature_dim=32),
            neural_resolution=64,
            num_coarse_samples=48,
            num_importance_samples=48,
            superresolution=SuperResolutionConfig(channels=128),
        ),
        discriminator=MultiViewDiscriminatorConfig(num_views=3, image=StyleGAN2ResnetDiscriminatorConfig()),
    )


triplane_gan = MethodSpecification(
    config=GanTrainerConfig(
        method_name="triplane-gan",
        max_num_iterations=500_000,
        steps_per_save=2000,
        mixed_precision=False,
        machine=MachineConfig(device_type=DEVICE),
        vis="tensorboard",
        viewer=ViewerConfig(websocket_host=LOOPBACK),
        pipeline=GanPipelineConfig(
            datamanager=GanDataManagerConfig(
                dataparser=ImageFolderDataParserConfig(),
                resolution=128,
                batch_size=32,
                num_workers=8,
                cache_images=False,
                hflip=True,
            ),
            model=_paper_model(),
            r1_gamma=1.0,
            blur_init_sigma=10.0,
            blur_fade_kimg=200.0,
            augment=AugmentConfig(mode="ada"),
        ),
        optimizers=_optimizers(0.0025, 0.002),
    ),
    description="Class-conditional triplane GAN from unposed ImageNet photos (Shen & Wang), paper configuration.",
)

_shapenet_model = _paper_model()
_shapenet_model.generator.background = "white"

triplane_gan_shapenet = MethodSpecification(
    config=GanTrainerConfig(
        method_name="triplane-gan-shapenet",
        max_num_iterations=200_000,
        steps_per_save=2000,
        mixed_precision=False,
        machine=MachineConfig(device_type=DEVICE),
        vis="tensorboard",
        viewer=ViewerConfig(websocket_host=LOOPBACK),
        pipeline=GanPipelineConfig(
            datamanager=GanDataManagerConfig(
                dataparser=RendersDataParserConfig(),
                resolution=128,
                batch_size=32,
                num_workers=8,
                cache_images=False,
            ),
            model=_shapenet_model,
            r1_gamma=0.3,
            blur_init_sigma=0.0,
            augment=AugmentConfig(mode="none"),
        ),
        optimizers=_optimizers(0.0025, 0.002),
    ),
    description="Triplane GAN on ShapeNet-style renders (SRN layout; categories are classes), for validation.",
)

triplane_gan_tiny = MethodSpecification(
    config=GanTrainerConfig(
        method_name="triplane-gan-tiny",
        max_num_iterations=1200,
        steps_per_save=600,
        geometry_objects_per_class=1,  # the demo's two measurements in ~11 s each (2 per class: ~25 s)
        preview_resolution=128,  # the 32² generator's sample grid and orbit rendered at 128² (3-4 s per save)
        mixed_precision=False,
        machine=MachineConfig(device_type=DEVICE, seed=0),
        vis="tensorboard",
        logging=LoggingConfig(steps_per_log=10, local_writer=GanLocalWriterConfig()),
        viewer=ViewerConfig(quit_on_train_completion=True, websocket_host=LOOPBACK),
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
                    # 4 + 8: cheaper steps than 16 + 16 (1.7x at 8 + 8, 1.2x more at 4 + 8), which buy more steps in
                    # the same minutes: geometry is further along then (docs/benchmarks.md, learning recipe)
                    num_coarse_samples=4,
                    num_importance_samples=8,
                ),
                discriminator=MultiViewDiscriminatorConfig(
                    num_views=3, image=StyleGAN2ResnetDiscriminatorConfig(channel_base=1024, channel_max=64)
                ),
                eval_num_rays_per_chunk=4096,
            ),
            r1_gamma=0.3,
            r1_interval=4,
            ema_half_life_kimg=0.5,
            augment=AugmentConfig(mode="none"),
        ),
        optimizers=_optimizers(0.0025, 0.002),
    ),
    description="Tiny triplane GAN for CPU on the embedded analytic-shapes data (minutes, not days).",
)


def _tiny_long() -> GanTrainerConfig:
    """The tiny preset for 2400 steps with 8 + 8 samples per ray and a geometry measurement (2 objects per class)
    every 300 steps: the longer recipe of docs/benchmarks.md (class-correct 4 / 4, F-score@0.05 0.61 at its end).
    Given 15-21 minutes, the finer sampling is worth its cost; within the demo's minutes, the cheaper 4 + 8 steps
    are."""
    config = copy.deepcopy(triplane_gan_tiny.config)
    config.method_name = "triplane-gan-tiny-long"
    config.max_num_iterations = 2400
    config.steps_per_save = 300
    config.geometry_objects_per_class = 2
    config.pipeline.model.generator.num_coarse_samples = 8
    return config


triplane_gan_tiny_long = MethodSpecification(
    config=_tiny_long(),
    description=(
        "The tiny preset trained longer: recognisable shapes of the embedded classes in ~20 min on 2 CPU cores."
    ),
)
