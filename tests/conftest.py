"""Shared fixtures: tiny configurations and a private cache for the embedded data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# Every test process (and the ns-train subprocesses they start) uses a private data cache.
_CACHE = Path(os.environ.setdefault("TRIPLANE_GAN_NS_CACHE", str(Path(__file__).parent / ".cache")))

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture
def tiny_model():
    """The triplane-gan-tiny model on 4 classes at 32² (random weights, fixed seed)."""
    from nerfstudio.data.scene_box import SceneBox

    from triplane_gan_ns.method_configs.triplane_gan import triplane_gan_tiny

    torch.manual_seed(0)
    cfg = triplane_gan_tiny.config.pipeline.model
    model = cfg.setup(
        scene_box=SceneBox(aabb=torch.tensor([[-1.0] * 3, [1.0] * 3])),
        num_train_data=1,
        metadata={"class_names": ["a", "b", "c", "d"], "resolution": 32},
    )
    return model.eval()
