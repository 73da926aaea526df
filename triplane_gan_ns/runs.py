"""The run folder: what training writes and every tool reads.

A run folder (``outputs/<experiment>/<method>/<timestamp>``) holds

* ``config.yml``: the trainer config, written by nerfstudio, read here by ``load_config`` (executes nothing);
* ``class_index.json``: the label -> class id and name mapping and the image resolution (``data/class_index.py``
  writes and reads it; the datamanager reads it too when a run's data is gone);
* ``nerfstudio_models/step-<step>.ckpt``: checkpoints (``save_checkpoint_file``, atomic; ``load_checkpoint_file``
  with ``torch.load(weights_only=True)``), each a dict with ``step``, ``pipeline`` (the pipeline's state dict:
  the model's weights under ``_model.``), ``optimizers`` and the training loop's states.

With ``config.yml``, ``class_index.json`` and a checkpoint, ``load_model`` rebuilds the generator without the
training data; ``write_tuned_run`` writes a run whose generator weights are replaced (PTI's fine-tuned
generator), which every tool loads like any other run.  Training writes runs through this module and the tools
read them through it; neither knows the other.

Reading ``config.yml`` safely
-----------------------------

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
from collections import OrderedDict
from pathlib import Path
from typing import Any, Dict, FrozenSet, List, Optional, Tuple

import numpy as np
import torch
import yaml
from nerfstudio.data.scene_box import SceneBox

from triplane_gan_ns.data.class_index import CLASS_INDEX, read_class_index
from triplane_gan_ns.errors import UserError
from triplane_gan_ns.fileio import atomic_write, torch_load_reason
from triplane_gan_ns.model import TriplaneGANModel
from triplane_gan_ns.registry import plugin_packages

CHECKPOINTS = "nerfstudio_models"
MODEL_PREFIX = "_model."
"""Prefix of the model's weights in a checkpoint's pipeline state dict."""

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


# ---- checkpoints -----------------------------------------------------------------------------------------------
def checkpoint_steps(folder: Path) -> Dict[int, Path]:
    """The checkpoints ``step-<number>.ckpt`` in ``folder`` by step, in step order; other files (``step-best.ckpt``,
    temporary files) are ignored."""
    folder = Path(folder)
    found = {}
    for path in folder.glob("step-*.ckpt") if folder.is_dir() else ():
        number = path.stem[len("step-") :]
        if number.isdigit() and number.isascii():
            found[int(number)] = path
    return dict(sorted(found.items()))


def state_dict_mismatch(module: torch.nn.Module, state: Dict[str, torch.Tensor]) -> str:
    """Where ``state`` does not fit ``module``: the first weight of a different shape, missing or unexpected
    ("" when every weight fits)."""
    own = module.state_dict()
    state = {k[len("module.") :] if k.startswith("module.") else k: v for k, v in state.items()}
    shapes = [k for k in own if k in state and tuple(own[k].shape) != tuple(getattr(state[k], "shape", ()))]
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    parts = []
    if shapes:
        key = shapes[0]
        more = f" (and {len(shapes) - 1} more weights of other shapes)" if len(shapes) > 1 else ""
        parts.append(f"{key} is {tuple(state[key].shape)} in the checkpoint but {tuple(own[key].shape)} here{more}")
    if missing:
        parts.append(f"{len(missing)} weights missing from the checkpoint, first {missing[0]}")
    if unexpected:
        parts.append(f"{len(unexpected)} unknown weights in the checkpoint, first {unexpected[0]}")
    return "; ".join(parts)


def load_checkpoint_file(path: Path) -> dict:
    """Read a checkpoint safely (no code execution); a truncated or foreign file gives one clear error."""
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist; check --load-dir / --load-checkpoint")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated zip, pickle with code, not a checkpoint at all
        reason = torch_load_reason(err)
        raise UserError(f"checkpoint {path} cannot be read ({reason}); it is truncated or not a triplane-gan-ns checkpoint") from None
    missing = {"step", "pipeline", "optimizers"} - set(state) if isinstance(state, dict) else {"everything"}
    if missing:
        raise UserError(f"checkpoint {path} lacks {', '.join(sorted(missing))}; it is not a triplane-gan-ns checkpoint")
    return state


def _without_numpy_scalars(value: Any) -> Any:
    """``value`` with every numpy scalar inside dicts, lists and tuples replaced by the Python number it holds.

    nerfstudio's learning-rate schedulers compute their factors with numpy, so a scheduler's state dict holds
    ``numpy.float64`` values, which ``torch.load(weights_only=True)`` refuses to read back.  Containers without
    numpy scalars are returned as they are (a module's state dict keeps its ``_metadata``)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        items = [(k, _without_numpy_scalars(v)) for k, v in value.items()]
        if all(new is old for (_, new), old in zip(items, value.values())):
            return value
        return OrderedDict(items) if isinstance(value, OrderedDict) else dict(items)
    if isinstance(value, (list, tuple)) and not hasattr(value, "_fields"):  # not a named tuple
        converted = [_without_numpy_scalars(v) for v in value]
        return value if all(new is old for new, old in zip(converted, value)) else type(value)(converted)
    return value


def save_checkpoint_file(path: Path, state: Dict[str, Any]) -> None:
    """Write a checkpoint atomically (a reader sees the old file or the new one, never a part) in a form that
    ``load_checkpoint_file`` reads back (numpy scalars stored as Python numbers)."""
    state = _without_numpy_scalars(state)
    atomic_write(Path(path), lambda tmp: torch.save(state, tmp))


# ---- the generator of a run ------------------------------------------------------------------------------------
def latest_checkpoint(run_dir: Path) -> Path:
    """The checkpoint of the highest step of a run (``step-<number>.ckpt``; other names are ignored)."""
    ckpts = checkpoint_steps(Path(run_dir) / CHECKPOINTS)
    if not ckpts:
        raise UserError(f"no checkpoint in {Path(run_dir) / CHECKPOINTS}; train first or pass --checkpoint")
    return list(ckpts.values())[-1]


def read_run_config(config_path: Path) -> Any:
    """The trainer config of a run from its ``config.yml`` (read safely), checked to be a triplane-gan-ns run."""
    config = load_config(config_path)
    model_config = getattr(getattr(config, "pipeline", None), "model", None)
    if model_config is None or not hasattr(model_config, "generator"):
        raise UserError(f"config {config_path} is not a triplane-gan-ns run (method {getattr(config, 'method_name', '?')})")
    if "dual_discrimination" not in vars(model_config):
        # a run from before dual discrimination existed: its discriminator judged the image alone
        model_config.dual_discrimination = False
    return config


def load_model(
    config_path: Path, checkpoint: Optional[Path] = None, device: str | torch.device = "cpu"
) -> Tuple[TriplaneGANModel, Path]:
    """(model in eval mode on ``device``, checkpoint used) from a run's ``config.yml``."""
    config_path = Path(config_path)
    model_config = read_run_config(config_path).pipeline.model
    run_dir = config_path.parent
    index = read_class_index(run_dir)
    class_names: List[str] = [c["name"] for c in index["classes"]]
    ckpt = Path(checkpoint) if checkpoint is not None else latest_checkpoint(run_dir)
    state = load_checkpoint_file(ckpt)
    model = model_config.setup(
        scene_box=SceneBox(aabb=torch.tensor([[-1.0] * 3, [1.0] * 3])),
        num_train_data=0,
        metadata={"class_names": class_names, "resolution": index["resolution"]},
    )
    weights = {k[len(MODEL_PREFIX) :]: v for k, v in state["pipeline"].items() if k.startswith(MODEL_PREFIX)}
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as err:
        reason = state_dict_mismatch(model, weights) or str(err).splitlines()[0]
        raise UserError(
            f"checkpoint {ckpt} does not match {config_path} ({reason}); "
            f"use a checkpoint of the run of that config.yml"
        ) from None
    return model.to(device).eval(), ckpt


def write_tuned_run(config_path: Path, checkpoint: Path, generator_state: Dict[str, torch.Tensor], out: Path) -> Path:
    """A run folder ``out/pti/<method>/tuned`` like the run of ``config_path``, whose checkpoint (a copy of
    ``checkpoint``) holds ``generator_state`` as both generator and EMA generator; returns its ``config.yml``."""
    config_path = Path(config_path)
    config = read_run_config(config_path)
    config.output_dir = out
    config.experiment_name = "pti"
    config.timestamp = "tuned"
    base = config.get_base_dir()
    config.pipeline.datamanager.run_class_index = base / CLASS_INDEX
    state = load_checkpoint_file(Path(checkpoint))
    tuned = {k: v.detach().cpu() for k, v in generator_state.items()}
    for prefix in (MODEL_PREFIX + "generator.", MODEL_PREFIX + "generator_ema."):
        for key, value in tuned.items():
            state["pipeline"][prefix + key] = value
    atomic_write(base / "config.yml", lambda tmp: tmp.write_text(yaml.dump(config), "utf8"))
    atomic_write(base / CLASS_INDEX, lambda tmp: tmp.write_bytes((config_path.parent / CLASS_INDEX).read_bytes()))
    save_checkpoint_file(base / CHECKPOINTS / Path(checkpoint).name, state)
    return base / "config.yml"
