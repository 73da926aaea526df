"""Shared by the benchmark scripts: the presets by short name, and a model of one with random weights."""

from __future__ import annotations

from typing import Optional

PRESETS = {"tiny": "triplane_gan_tiny", "paper": "triplane_gan"}
NUM_CLASSES = 10
"""Classes of the benchmark models (the paper-scale class embedding grows with the class count)."""


def preset_model(preset: str, device: str, seed: int = 0, samples_per_ray: Optional[int] = None):
    """(model of the preset with random weights on ``device``, in train mode; the preset's image resolution);
    ``samples_per_ray`` replaces the preset's coarse and importance samples per ray."""
    import copy

    import torch
    from nerfstudio.data.scene_box import SceneBox

    from triplane_gan_ns.method_configs import triplane_gan as presets

    config = copy.deepcopy(getattr(presets, PRESETS[preset]).config)
    if samples_per_ray is not None:
        generator = config.pipeline.model.generator
        generator.num_coarse_samples = generator.num_importance_samples = samples_per_ray
    resolution = config.pipeline.datamanager.resolution
    torch.manual_seed(seed)
    model = config.pipeline.model.setup(
        scene_box=SceneBox(aabb=torch.tensor([[-1.0] * 3, [1.0] * 3])),
        num_train_data=1,
        metadata={"class_names": [str(i) for i in range(NUM_CLASSES)], "resolution": resolution},
    ).to(device)
    return model, resolution


def tiny_trainer(samples_per_ray: int = 16, seed: int = 0):
    """A set-up ``triplane-gan-tiny`` trainer on the embedded shapes (CPU, random initial weights, a temporary
    output folder) with ``samples_per_ray`` coarse and importance samples (16: issue 10's baseline settings,
    whatever the preset now uses); ready for ``train_iteration(step)``."""
    import copy

    import torch

    from triplane_gan_ns.method_configs.triplane_gan import triplane_gan_tiny

    torch.manual_seed(seed)
    config = copy.deepcopy(triplane_gan_tiny.config)
    generator = config.pipeline.model.generator
    generator.num_coarse_samples = generator.num_importance_samples = samples_per_ray
    return setup_trainer(config)


def setup_trainer(config):
    """The trainer of ``config`` set up on the CPU (checkpoints it loads, if any; a temporary output folder,
    tensorboard logs), in train mode: ready for ``train_iteration(step)``."""
    import tempfile
    from pathlib import Path

    config.machine.device_type = "cpu"
    config.output_dir = Path(tempfile.mkdtemp())
    config.vis = "tensorboard"
    config.set_timestamp()
    trainer = config.setup(local_rank=0, world_size=1)
    trainer.setup()
    trainer.pipeline.train()
    return trainer
