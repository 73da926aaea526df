"""Component registry: Python entry points -> component configs, looked up by name.

Every swappable component (backbone, field, pose sampler, discriminator) is registered under one of the
entry-point groups below by the *config class* that builds it (a nerfstudio ``InstantiateConfig`` whose
``_target`` is the component).  This package registers its own components in ``pyproject.toml`` exactly the
way a third party would::

    [project.entry-points."triplane_gan_ns.backbones"]
    my-backbone = "my_package.backbone:MyBackboneConfig"

This module is the only place that knows about entry points.
"""

from __future__ import annotations

import sys
from importlib.metadata import entry_points
from typing import Dict, Type

import tyro
from nerfstudio.configs.base_config import InstantiateConfig

from triplane_gan_ns.errors import UserError

KINDS = {
    "backbones": "triplane_gan_ns.backbones",
    "fields": "triplane_gan_ns.fields",
    "pose_samplers": "triplane_gan_ns.pose_samplers",
    "discriminators": "triplane_gan_ns.discriminators",
}


class UnknownComponentError(UserError):
    """Raised for a component name that no installed distribution registers."""


def _group(kind: str) -> str:
    if kind not in KINDS:
        raise UnknownComponentError(f"unknown component kind {kind!r}; known kinds: {', '.join(sorted(KINDS))}")
    return KINDS[kind]


def names(kind: str) -> list[str]:
    """Sorted names registered for ``kind``."""
    return sorted({ep.name for ep in entry_points(group=_group(kind))})


def config_class(kind: str, name: str) -> Type[InstantiateConfig]:
    """The config class registered as ``name`` in ``kind``; a one-line error lists the known names."""
    matches = [ep for ep in entry_points(group=_group(kind)) if ep.name == name]
    if not matches:
        known = ", ".join(names(kind)) or "none installed"
        raise UnknownComponentError(
            f"no {kind[:-1].replace('_', ' ')} named {name!r} (entry-point group {_group(kind)!r}); known: {known}"
        )
    cls = matches[0].load()
    if not (isinstance(cls, type) and issubclass(cls, InstantiateConfig)):
        raise UnknownComponentError(
            f"entry point {name!r} in {_group(kind)!r} must name an InstantiateConfig subclass, got {cls!r}"
        )
    return cls


def config(kind: str, name: str, **overrides) -> InstantiateConfig:
    """A fresh config instance of the component ``name``, with field ``overrides``."""
    return config_class(kind, name)(**overrides)


def name_of(kind: str, cfg: InstantiateConfig) -> str:
    """The registered name of a config instance (its exact class), for logs and file names."""
    for ep in entry_points(group=_group(kind)):
        if ep.value.split(":")[-1] == type(cfg).__name__ and ep.load() is type(cfg):
            return ep.name
    return type(cfg).__name__


def choice_type(kind: str) -> type:
    """A tyro subcommand union over every registered component of ``kind``, named by entry-point name.

    Used as the annotation of a config field so that ``--help`` lists the installed choices and the command
    line selects one by name (``pipeline.model.backbone:stylegan2-eg3d``).
    """
    defaults: Dict[str, InstantiateConfig] = {n: config(kind, n) for n in names(kind)}
    if not defaults:
        raise UnknownComponentError(f"no component registered in {_group(kind)!r}; is triplane-gan-ns installed?")
    return tyro.extras.subcommand_type_from_defaults(defaults, prefix_names=False)


def plugin_packages() -> frozenset:
    """Top-level packages of the installed component configs (other than the standard library's), whose
    dataclasses a run's ``config.yml`` may name."""
    packages = {ep.value.split(":")[0].split(".")[0] for group in KINDS.values() for ep in entry_points(group=group)}
    return frozenset(packages - set(sys.stdlib_module_names))
