"""Shared by the benchmark scripts: the presets by short name, and a model of one with random weights."""

from __future__ import annotations

PRESETS = {"tiny": "triplane_gan_tiny", "paper": "triplane_gan"}
NUM_CLASSES = 10
"""Classes of the benchmark models (the paper-scale class embedding grows with the class count)."""


def preset_model(preset: str, device: str, seed: int = 0):
    """(model of the preset with random weights on ``device``, in train mode; the preset's image resolution)."""
    import torch
    from nerfstudio.data.scene_box import SceneBox

    from triplane_gan_ns.method_configs import triplane_gan as presets

    spec = getattr(presets, PRESETS[preset])
    resolution = spec.config.pipeline.datamanager.resolution
    torch.manual_seed(seed)
    model = spec.config.pipeline.model.setup(
        scene_box=SceneBox(aabb=torch.tensor([[-1.0] * 3, [1.0] * 3])),
        num_train_data=1,
        metadata={"class_names": [str(i) for i in range(NUM_CLASSES)], "resolution": resolution},
    ).to(device)
    return model, resolution
