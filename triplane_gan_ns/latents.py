"""Latents that can be reproduced: (class, seed, truncation psi) -> ws through the EMA generator, or a saved file.

A latent file is a ``torch.save``d dict ``{"ws": Tensor[1, num_ws, w_dim], "class_index": int}`` (written by
``save_latent``; read back with ``torch.load(weights_only=True)``, so it can never run code).  Its ``ws`` are
used as they are: truncation was applied, if at all, when the file was made.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

import torch
from jaxtyping import Float
from torch import Tensor

from triplane_gan_ns.errors import UserError
from triplane_gan_ns.fileio import atomic_write, torch_load_reason
from triplane_gan_ns.model import TriplaneGANModel
from triplane_gan_ns.runs import load_model

MAX_LISTED_NAMES = 20
"""Unknown class names are answered with at most this many of the valid names."""


def check_finite(flag: str, value: float, meaning: str) -> None:
    """A UserError naming ``flag`` unless ``value`` is a finite number (not nan or inf)."""
    if not math.isfinite(value):
        raise UserError(f"{flag} {value} is not a finite number; use {meaning}")


def check_truncation(psi: float) -> None:
    """``--truncation`` must be finite (nan or inf would give blank images)."""
    check_finite("--truncation", psi, "a truncation psi such as 0.7 (1 = none, 0 = the class average)")


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when available, else ``cpu``."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {device} was asked for but CUDA is not available; use --device cpu")
    return device


def open_model(load_config: Path, checkpoint: Optional[Path], device: str) -> TriplaneGANModel:
    """The trained model of a run (``config.yml``; the latest checkpoint unless one is given), in eval mode."""
    if checkpoint is not None and not Path(checkpoint).is_file():
        raise UserError(f"checkpoint {checkpoint} does not exist; check --checkpoint (or leave it out for the latest)")
    model, _ = load_model(load_config, checkpoint, resolve_device(device))
    return model


ModelOrConfig = Union[TriplaneGANModel, str, Path]
"""A loaded model, or the ``config.yml`` of a run to load it from."""


def as_model(model: ModelOrConfig, checkpoint: Optional[Path] = None, device: str = "auto") -> TriplaneGANModel:
    """``model`` itself, or the model of the run whose ``config.yml`` it names (``open_model``; ``checkpoint`` and
    ``device`` only apply then)."""
    if isinstance(model, TriplaneGANModel):
        return model
    return open_model(Path(model), checkpoint, device)


def _valid_classes(class_names: Sequence[str]) -> str:
    if not class_names:
        return "the model is unconditional: use class 0"
    names = ", ".join(class_names[:MAX_LISTED_NAMES])
    if len(class_names) > MAX_LISTED_NAMES:
        names += f", ... ({len(class_names)} classes, see class_index.json in the run folder)"
    return f"valid: an index 0..{len(class_names) - 1} or a name ({names})"


def resolve_class(spec: str | int, class_names: Sequence[str]) -> int:
    """Class index from an index (``2``, ``"2"``) or a class name (exact, else case-insensitive)."""
    num = max(len(class_names), 1)
    text = str(spec).strip()
    if text.lstrip("-").isdigit():
        index = int(text)
        if not 0 <= index < num:
            raise UserError(f"class {index} is out of range; {_valid_classes(class_names)}")
        return index
    if text in class_names:
        return list(class_names).index(text)
    folded = [name.casefold() for name in class_names]
    if text.casefold() in folded:
        return folded.index(text.casefold())
    raise UserError(f"unknown class {text!r}; {_valid_classes(class_names)}")


@dataclass(eq=False)
class Latent:
    """One generated object: ``(class_index, seed, truncation_psi)``, or the ``ws`` of a saved latent file."""

    class_index: int
    seed: Optional[int] = None
    truncation_psi: float = 1.0
    saved_ws: Optional[Float[Tensor, "1 num_ws w_dim"]] = None
    source: Optional[Path] = None
    """The latent file ``saved_ws`` came from."""

    @property
    def name(self) -> str:
        """File-name stem of this latent's outputs."""
        if self.source is not None:
            return f"latent-{self.source.stem}"
        return f"class{self.class_index}_seed{self.seed}"

    @torch.no_grad()
    def ws(self, model: TriplaneGANModel) -> Float[Tensor, "1 num_ws w_dim"]:
        """The style vectors of this latent for the model's EMA generator."""
        if self.saved_ws is not None:
            return self.saved_ws.to(model.device)
        if self.seed is None:
            raise ValueError("a latent needs a seed or saved ws")
        z = model.seeded_latents([self.seed])
        labels = torch.tensor([self.class_index], device=model.device)
        return model.generator_ema.mapping(z, labels, self.truncation_psi)


def load_latent(path: Path, model: TriplaneGANModel) -> Latent:
    """A saved latent file, checked against the model (shape of ``ws``, class in range)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"latent file {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise UserError(f"latent file {path} cannot be read ({torch_load_reason(err)})") from None
    if not isinstance(state, dict) or not isinstance(state.get("ws"), Tensor) or "class_index" not in state:
        raise UserError(f'latent file {path} is not a dict with "ws" and "class_index"')
    backbone = model.generator_ema.backbone
    expected = (1, backbone.num_ws, backbone.w_dim)
    ws = state["ws"]
    if tuple(ws.shape) != expected or not ws.is_floating_point():
        raise UserError(f"latent file {path} holds ws of shape {tuple(ws.shape)}; this model needs {expected}")
    class_index = resolve_class(int(state["class_index"]), model.class_names)
    return Latent(class_index=class_index, saved_ws=ws.float(), source=path)


def save_latent(path: Path, ws: Float[Tensor, "1 num_ws w_dim"], class_index: int) -> None:
    """Write a latent file that ``load_latent`` (and ``--latent``) reads (atomically)."""
    state = {"ws": ws.detach().float().cpu().contiguous(), "class_index": int(class_index)}
    atomic_write(Path(path), lambda tmp: torch.save(state, tmp))


LatentSpec = Union[Latent, str, Path, Tuple[Union[str, int], int]]
"""A ``Latent``, a saved latent file, or a ``(class, seed)`` pair (the class by index or name)."""


def resolve_latent(model: TriplaneGANModel, spec: LatentSpec, truncation_psi: float) -> Latent:
    """The ``Latent`` of a ``LatentSpec``; ``truncation_psi`` applies to a ``(class, seed)`` pair."""
    if isinstance(spec, Latent):
        return spec
    if isinstance(spec, (str, Path)):
        return load_latent(Path(spec), model)
    class_, seed = spec
    return Latent(class_index=resolve_class(class_, model.class_names), seed=int(seed), truncation_psi=truncation_psi)


def latent_specs(
    classes: Sequence[str | int], seeds: Sequence[int], latent_files: Sequence[Path] = ()
) -> List[LatentSpec]:
    """The latent files, or else every (class, seed) pair in order."""
    return list(latent_files) or [(c, int(s)) for c in classes for s in seeds]


def latents_from_args(
    model: TriplaneGANModel,
    classes: Sequence[str | int],
    seeds: Sequence[int],
    truncation_psi: float,
    latent_files: Sequence[Path] = (),
) -> List[Latent]:
    """Every (class, seed) pair in order (classes by index or name), or the given latent files instead."""
    return [resolve_latent(model, spec, truncation_psi) for spec in latent_specs(classes, seeds, latent_files)]
