"""Shared fixtures: tiny configurations and a private cache for the embedded data."""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from typing import Dict

import pytest
import torch

# Every test process (and the ns-train subprocesses they start) uses a private data cache.
_CACHE = Path(os.environ.setdefault("TRIPLANE_GAN_NS_CACHE", str(Path(__file__).parent / ".cache")))

# `make test` runs the suite on pytest-xdist workers, one per core: each worker (and every process it starts,
# through OMP_NUM_THREADS) gets its share of the cores, so workers never oversubscribe them.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
_THREADS = max(1, min(2, os.cpu_count() or 1) // _WORKERS)
if _WORKERS > 1:
    os.environ["OMP_NUM_THREADS"] = str(_THREADS)
torch.set_num_threads(_THREADS)

pytest_plugins = ["run_fixture"]  # the session's trained tiny run (``trained_tiny_run``), built once


def pytest_collection_modifyitems(config, items):
    """The minutes-long training tests first, so that parallel workers do not end the suite waiting on one."""
    items.sort(key=lambda item: item.get_closest_marker("long") is None)


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


@pytest.fixture
def tiny_trainer(tmp_path):
    """Factory of in-process ``triplane-gan-tiny`` trainers, set up and ready for ``train_iteration(step)``.

    ``resolution`` and ``samples_per_ray`` shrink the cost only; keyword arguments ``a__b=value`` set
    ``config.a.b``.  Each call seeds torch with ``seed`` first, so two calls build identical trainers.
    """
    import copy

    from triplane_gan_ns.method_configs.triplane_gan import triplane_gan_tiny

    def build(seed: int = 0, resolution: int = 16, samples_per_ray: int = 8, **overrides):
        torch.manual_seed(seed)
        cfg = copy.deepcopy(triplane_gan_tiny.config)
        cfg.machine.device_type = "cpu"
        cfg.machine.seed = seed
        cfg.output_dir = tmp_path / f"run-{len(list(tmp_path.glob('run-*')))}"
        cfg.vis = "tensorboard"
        cfg.pipeline.datamanager.resolution = resolution
        generator = cfg.pipeline.model.generator
        generator.neural_resolution = resolution
        generator.num_coarse_samples = samples_per_ray
        generator.num_importance_samples = samples_per_ray
        for key, value in overrides.items():
            *parents, name = key.split("__")
            target = cfg
            for parent in parents:
                target = getattr(target, parent)
            assert hasattr(target, name), key
            setattr(target, name, value)
        cfg.set_timestamp()
        trainer = cfg.setup(local_rank=0, world_size=1)
        trainer.setup()
        return trainer

    return build


@pytest.fixture
def install_plugin(tmp_path, monkeypatch):
    """Factory of throw-away installed distributions: ``install(name, files, entry_points)`` writes the
    ``files`` ({relative path: source}) and a ``<name>.dist-info`` with ``entry_points``
    ({group: {entry name: "module:attr"}}) into a folder, puts it on ``sys.path`` and returns it (for the
    ``PYTHONPATH`` of subprocesses).  ``importlib.metadata`` then finds the entry points exactly as it finds
    those of a pip-installed package; everything is removed after the test."""
    site = tmp_path / "site"
    top_level = set()

    def install(name: str, files: Dict[str, str], entry_points: Dict[str, Dict[str, str]]) -> Path:
        for relative, source in files.items():
            path = site / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(source)
            top_level.add(Path(relative).parts[0].removesuffix(".py"))
        info = site / f"{name.replace('-', '_')}-0.1.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
        (info / "entry_points.txt").write_text(
            "".join(
                f"[{group}]\n" + "".join(f"{entry} = {value}\n" for entry, value in entries.items())
                for group, entries in entry_points.items()
            )
        )
        if str(site) not in sys.path:
            monkeypatch.syspath_prepend(str(site))
        importlib.invalidate_caches()
        return site

    yield install
    for module in [m for m in sys.modules if m.split(".")[0] in top_level]:
        sys.modules.pop(module)
