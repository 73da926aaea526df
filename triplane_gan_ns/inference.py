"""Load a trained generator from a run folder, without the training data.

A run folder (``outputs/<experiment>/<method>/<timestamp>``) holds ``config.yml``, ``class_index.json`` and
``nerfstudio_models/step-*.ckpt``; ``load_model`` rebuilds the model from the first two (``config.yml`` read with
``runs.load_config``, which executes nothing) and loads the weights of the latest (or a given) checkpoint with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional, Tuple

import torch
from nerfstudio.data.scene_box import SceneBox

from triplane_gan_ns.errors import UserError
from triplane_gan_ns.model import TriplaneGANModel
from triplane_gan_ns.runs import load_config
from triplane_gan_ns.training.trainer import CLASS_INDEX, GanTrainerConfig, checkpoint_steps, load_checkpoint_file, state_dict_mismatch


def latest_checkpoint(run_dir: Path) -> Path:
    """The checkpoint of the highest step of a run (``step-<number>.ckpt``; other names are ignored)."""
    ckpts = checkpoint_steps(run_dir / "nerfstudio_models")
    if not ckpts:
        raise UserError(f"no checkpoint in {run_dir / 'nerfstudio_models'}; train first or pass --checkpoint")
    return list(ckpts.values())[-1]


def read_run_config(config_path: Path) -> GanTrainerConfig:
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
    index_path = run_dir / CLASS_INDEX
    if not index_path.is_file():
        raise UserError(f"{index_path} is missing; it is written when training starts")
    index = json.loads(index_path.read_text())
    class_names: List[str] = [c["name"] for c in index["classes"]]
    ckpt = Path(checkpoint) if checkpoint is not None else latest_checkpoint(run_dir)
    state = load_checkpoint_file(ckpt)
    model = model_config.setup(
        scene_box=SceneBox(aabb=torch.tensor([[-1.0] * 3, [1.0] * 3])),
        num_train_data=0,
        metadata={"class_names": class_names, "resolution": index["resolution"]},
    )
    weights = {k[len("_model.") :]: v for k, v in state["pipeline"].items() if k.startswith("_model.")}
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as err:
        reason = state_dict_mismatch(model, weights) or str(err).splitlines()[0]
        raise UserError(
            f"checkpoint {ckpt} does not match {config_path} ({reason}); "
            f"use a checkpoint of the run of that config.yml"
        ) from None
    return model.to(device).eval(), ckpt
