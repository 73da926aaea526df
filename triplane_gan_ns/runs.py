"""Reading a run's ``config.yml`` without executing anything it says.

nerfstudio writes ``config.yml`` with ``yaml.dump``, which tags Python objects (``!!python/object:...``); reading
it back with ``yaml.Loader`` would import and call whatever a tag names, so a shared run folder could run code.
``load_config`` uses ``RunConfigLoader`` instead: a ``yaml.SafeLoader`` that reconstructs only

* ``!!python/object:CLASS`` where CLASS is a dataclass, built with ``CLASS.__new__`` and its fields set from the
  mapping (no ``__init__``, ``__setstate__`` or ``__reduce__`` runs; missing fields get their defaults, keys that
  are not fields are ignored);
* ``!!python/name:CLASS``, a class reference such as a config's ``_target`` (never called here);
* ``!!python/object/apply:`` of ``pathlib.PosixPath`` (strings only) or of an ``Enum`` (member lookup);
* ``!!python/tuple``;

where every CLASS must be defined in ``nerfstudio``, ``tyro``, ``triplane_gan_ns`` or a package that registers
triplane-gan-ns components (entry points, see ``registry``); the only other class is a ``torch.optim`` optimizer
as ``_target`` of an optimizer config.  Any other tag is refused with a one-line ``UserError`` naming the file,
the line and the tag.
"""

from __future__ import annotations

import dataclasses
import enum
import importlib
import inspect
import pathlib
from pathlib import Path
from typing import Any, FrozenSet

import yaml

from triplane_gan_ns.errors import UserError
from triplane_gan_ns.registry import plugin_packages

ALLOWED_PACKAGES = ("nerfstudio", "tyro", "triplane_gan_ns")
_YAML_PREFIX = "tag:yaml.org,2002:"


class _RefusedTag(Exception):
    def __init__(self, node: yaml.Node):
        super().__init__(node.tag)
        self.tag = "!!" + node.tag[len(_YAML_PREFIX) :] if node.tag.startswith(_YAML_PREFIX) else node.tag
        self.line = node.start_mark.line + 1


def _allowed_packages() -> FrozenSet[str]:
    return frozenset(ALLOWED_PACKAGES) | plugin_packages()


def _in_allowed_package(module_name: str, packages: FrozenSet[str]) -> bool:
    return module_name.split(".")[0] in packages


class RunConfigLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` plus the dataclasses, class references, paths, enums and tuples of a run config."""

    def __init__(self, stream):
        super().__init__(stream)
        self.packages = _allowed_packages()

    def _class(self, name: str, node: yaml.Node, optimizer_ok: bool = False) -> type:
        """The class called ``name`` (``module.Class``), imported only from an allowed package (or, with
        ``optimizer_ok``, a ``torch.optim`` optimizer)."""
        module_name, _, attr = name.rpartition(".")
        optimizer_ok = optimizer_ok and (module_name + ".").startswith("torch.optim.")
        if not module_name or not (_in_allowed_package(module_name, self.packages) or optimizer_ok):
            raise _RefusedTag(node)
        try:
            cls = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError):
            raise yaml.constructor.ConstructorError(
                None, None, f"cannot find {name} (is the package that defines it installed?)", node.start_mark
            ) from None
        if inspect.isclass(cls) and _in_allowed_package(cls.__module__, self.packages):
            return cls
        if optimizer_ok and inspect.isclass(cls) and (cls.__module__ + ".").startswith("torch.optim."):
            import torch.optim

            if issubclass(cls, torch.optim.Optimizer):
                return cls
        raise _RefusedTag(node)

    def construct_python_tag(self, suffix: str, node: yaml.Node) -> Any:
        kind, _, name = suffix.partition(":")
        if kind == "name" and isinstance(node, yaml.ScalarNode) and not self.construct_scalar(node):
            return self._class(name, node, optimizer_ok=True)
        if kind == "object" and isinstance(node, yaml.MappingNode):
            return self._dataclass(name, node)
        if kind == "object/apply" and isinstance(node, yaml.SequenceNode):
            return self._apply(name, node)
        raise _RefusedTag(node)

    def _dataclass(self, name: str, node: yaml.MappingNode):
        cls = self._class(name, node)
        if not dataclasses.is_dataclass(cls):
            raise _RefusedTag(node)
        instance = cls.__new__(cls)
        yield instance
        state = self.construct_mapping(node, deep=True)
        for f in dataclasses.fields(cls):  # keys that are no field (any more) are left out
            if f.name in state:
                value = state[f.name]
            elif f.default is not dataclasses.MISSING:
                continue  # the class attribute supplies it, and vars() shows the field was not in the file
            elif f.default_factory is not dataclasses.MISSING:
                value = f.default_factory()
            else:
                continue
            object.__setattr__(instance, f.name, value)

    def _apply(self, name: str, node: yaml.SequenceNode) -> Any:
        args = self.construct_sequence(node, deep=True)
        if name == "pathlib.PosixPath" and all(isinstance(a, str) for a in args):
            return pathlib.PosixPath(*args)
        cls = self._class(name, node)
        if not (issubclass(cls, enum.Enum) and len(args) == 1):
            raise _RefusedTag(node)
        try:
            return cls(args[0])
        except ValueError:
            raise yaml.constructor.ConstructorError(
                None, None, f"{args[0]!r} is not a member of {name}", node.start_mark
            ) from None

    def construct_tuple(self, node: yaml.SequenceNode) -> tuple:
        return tuple(self.construct_sequence(node, deep=True))

    def construct_undefined(self, node: yaml.Node):
        raise _RefusedTag(node)


RunConfigLoader.add_constructor(_YAML_PREFIX + "python/tuple", RunConfigLoader.construct_tuple)
RunConfigLoader.add_multi_constructor(_YAML_PREFIX + "python/", RunConfigLoader.construct_python_tag)
RunConfigLoader.add_constructor(None, RunConfigLoader.construct_undefined)


def load_config(config_path: Path) -> Any:
    """The object written to ``config_path`` by nerfstudio, read with ``RunConfigLoader``; one-line errors."""
    config_path = Path(config_path)
    if not config_path.is_file():
        raise UserError(f"config {config_path} does not exist; pass the config.yml of a training run")
    try:
        return yaml.load(config_path.read_text(), Loader=RunConfigLoader)
    except _RefusedTag as refused:
        raise UserError(
            f"config {config_path} line {refused.line}: tag {refused.tag} is not allowed; a run config may only "
            f"contain dataclasses of {', '.join(sorted(_allowed_packages()))}; remove that line or do not use this run"
        ) from None
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        where = f" line {err.problem_mark.line + 1}" if getattr(err, "problem_mark", None) else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise UserError(f"config {config_path}{where} is not a readable config.yml ({problem})") from None
