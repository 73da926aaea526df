"""Components are found by name through real entry points, including a third party's."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from triplane_gan_ns import registry

TOY_PLUGIN = '''
from dataclasses import dataclass, field
from typing import Type

import torch
from torch import nn

from triplane_gan_ns.backbones.base import Backbone, BackboneConfig


@dataclass
class ToyBackboneConfig(BackboneConfig):
    _target: Type = field(default_factory=lambda: ToyBackbone)
    z_dim: int = 8
    w_dim: int = 8
    plane_channels: int = 4
    plane_resolution: int = 8


class ToyBackbone(Backbone):
    """One linear layer from w to the planes."""

    num_ws = 1

    def __init__(self, config, num_classes):
        super().__init__(config, num_classes)
        self.embed = nn.Embedding(max(num_classes, 1), config.w_dim)
        self.to_planes = nn.Linear(config.w_dim, 3 * config.plane_channels * config.plane_resolution**2)

    def mapping(self, z, labels, truncation_psi=1.0, truncation_cutoff=None, update_w_avg=False):
        return (z + self.embed(labels))[:, None] * truncation_psi

    def synthesis(self, ws, noise_mode="random"):
        c, r = self.plane_channels, self.plane_resolution
        return self.to_planes(ws[:, 0]).view(-1, 3, c, r, r)

    def w_average(self, labels):
        return torch.zeros(labels.shape[0], 1, self.w_dim)
'''


@pytest.fixture
def toy_distribution(install_plugin):
    """A throw-away installed distribution that registers backbone 'toy-linear' by entry point."""
    return install_plugin(
        "toy-triplane-plugin",
        {"toy_triplane_plugin/__init__.py": TOY_PLUGIN},
        {"triplane_gan_ns.backbones": {"toy-linear": "toy_triplane_plugin:ToyBackboneConfig"}},
    )


def test_own_components_are_registered_by_name():
    assert {"stylegan2-triplane", "stylegan2-eg3d"} <= set(registry.names("backbones"))
    assert "triplane" in registry.names("fields")
    assert {"uniform-sphere", "gaussian-frontal"} <= set(registry.names("pose_samplers"))
    assert "stylegan2-resnet" in registry.names("discriminators")
    eg3d = registry.config("backbones", "stylegan2-eg3d")
    assert eg3d.extra_blocks is False and registry.config("backbones", "stylegan2-triplane").extra_blocks is True


def test_unknown_name_error_lists_known_names():
    with pytest.raises(registry.UnknownComponentError) as err:
        registry.config("backbones", "stylegan3")
    message = str(err.value)
    assert "stylegan3" in message and "stylegan2-triplane" in message and "stylegan2-eg3d" in message
    assert "\n" not in message


def test_third_party_backbone_is_found_and_used(toy_distribution):
    from triplane_gan_ns.generator import TriplaneGeneratorConfig
    from triplane_gan_ns.fields.triplane import TriplaneFieldConfig

    assert "toy-linear" in registry.names("backbones")
    cfg = registry.config("backbones", "toy-linear")
    assert type(cfg).__module__ == "toy_triplane_plugin"
    assert registry.name_of("backbones", cfg) == "toy-linear"
    gen = TriplaneGeneratorConfig(
        backbone=cfg, field=TriplaneFieldConfig(hidden_dim=8, feature_dim=4), neural_resolution=8,
        num_coarse_samples=4, num_importance_samples=4,
    ).setup(num_classes=3, output_resolution=8)
    assert type(gen.backbone).__name__ == "ToyBackbone"
    sampler = registry.config("pose_samplers", "uniform-sphere").setup()
    ws = gen.mapping(torch.randn(2, 8), torch.tensor([0, 2]))
    out = gen.render(ws, sampler.sample(4, 8))
    assert out["image"].shape == (4, 3, 8, 8) and out["planes"].shape == (2, 3, 4, 8, 8)
    out["image"].mean().backward()
    assert gen.backbone.to_planes.weight.grad.abs().sum() > 0


def test_third_party_backbone_is_a_choice_on_the_command_line(toy_distribution):
    env = {**os.environ, "PYTHONPATH": f"{toy_distribution}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    ns_train = Path(sys.executable).with_name("ns-train")
    result = subprocess.run(
        [str(ns_train), "triplane-gan-tiny", "--help"], capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    for name in ("toy-linear", "stylegan2-triplane", "stylegan2-eg3d", "uniform-sphere", "gaussian-frontal"):
        assert name in result.stdout, name
    # the chosen name reaches the config, with the third party's own options
    result = subprocess.run(
        [str(ns_train), "triplane-gan-tiny", "toy-linear", "--help"], capture_output=True, text=True, env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "plane-resolution" in result.stdout and "(default: 8)" in result.stdout


def test_every_package_folder_is_installed():
    """A non-editable install (``pip install .``, a wheel) holds only the packages pyproject.toml lists: every
    folder of ``triplane_gan_ns`` with an ``__init__.py`` must be among them, and every listed one must exist."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        tomllib = pytest.importorskip("tomli")
    root = Path(__file__).resolve().parents[1]
    setuptools = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(setuptools["packages"])
    folders = {
        ".".join(init.parent.relative_to(root).parts) for init in (root / "triplane_gan_ns").rglob("__init__.py")
    }
    mapped = {name for name in listed if name in setuptools.get("package-dir", {})}
    assert folders - listed == set(), "missing from [tool.setuptools] packages"
    for name in mapped:
        assert (root / setuptools["package-dir"][name]).is_dir(), name
    assert listed - mapped == folders
