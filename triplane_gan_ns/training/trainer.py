"""nerfstudio Trainer with a GAN step: a discriminator update, then a generator update, each with its own
optimizer.  Checkpoints are written atomically and each one is accompanied by a PNG grid of samples."""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Type

import numpy as np
import torch
from nerfstudio.engine.trainer import Trainer, TrainerConfig
from nerfstudio.utils import writer
from nerfstudio.utils.decorators import check_main_thread
from PIL import Image

from triplane_gan_ns.training.pipeline import GanPipeline, GanPipelineConfig


@dataclass
class GanTrainerConfig(TrainerConfig):
    """nerfstudio's trainer settings plus the GAN alternation."""

    _target: Type = field(default_factory=lambda: GanTrainer)
    pipeline: GanPipelineConfig = field(default_factory=GanPipelineConfig)
    """The GAN pipeline."""
    sample_grid_views: int = 6
    """Views (columns) of the sample grid written with every checkpoint."""


def atomic_write_bytes(path: Path, write) -> None:
    """Call ``write(tmp_path)`` and move the result onto ``path`` in one rename (no partial files)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


class GanTrainer(Trainer):
    config: GanTrainerConfig
    pipeline: GanPipeline

    def train_iteration(self, step: int):
        loss_dict: Dict[str, torch.Tensor] = {}
        metrics_dict: Dict[str, torch.Tensor] = {}
        for phase in ("discriminator", "generator"):
            self.optimizers.zero_grad_some([phase])
            losses, metrics = self.pipeline.gan_losses(step, phase)  # type: ignore[arg-type]
            functools.reduce(torch.add, losses.values()).backward()
            self.optimizers.optimizer_step(phase)
            loss_dict.update({k: v.detach() for k, v in losses.items()})
            metrics_dict.update(metrics)
        self.optimizers.scheduler_step_all(step)
        total = functools.reduce(torch.add, loss_dict.values())
        return total, loss_dict, metrics_dict

    @check_main_thread
    def save_checkpoint(self, step: int) -> None:
        """Save pipeline, optimizers and step atomically, then a sample grid next to the checkpoints."""
        pipeline = self.pipeline.module if hasattr(self.pipeline, "module") else self.pipeline  # type: ignore
        state = {
            "step": step,
            "pipeline": pipeline.state_dict(),
            "optimizers": {k: v.state_dict() for (k, v) in self.optimizers.optimizers.items()},
            "schedulers": {k: v.state_dict() for (k, v) in self.optimizers.schedulers.items()},
            "scalers": self.grad_scaler.state_dict(),
        }
        ckpt_path = self.checkpoint_dir / f"step-{step:09d}.ckpt"
        atomic_write_bytes(ckpt_path, lambda tmp: torch.save(state, tmp))
        if self.config.save_only_latest_checkpoint:
            for f in self.checkpoint_dir.glob("step-*.ckpt"):
                if f != ckpt_path:
                    f.unlink()
        self.write_sample_grid(step)

    def write_sample_grid(self, step: int) -> Path:
        """PNG of several classes (rows) x camera azimuths (columns) of the current generator."""
        model = self.pipeline.gan_model
        was_training = model.training
        model.eval()
        grid = model.sample_grid(num_views=self.config.sample_grid_views)
        model.train(was_training)
        array = (grid.permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)
        path = self.base_dir / "samples" / f"samples-{step:09d}.png"
        atomic_write_bytes(path, lambda tmp: Image.fromarray(array).save(tmp, format="PNG"))
        atomic_write_bytes(path.with_name("samples-latest.png"), lambda tmp: Image.fromarray(array).save(tmp, format="PNG"))
        writer.put_image(name="Samples/grid", image=grid.permute(1, 2, 0).cpu(), step=step)
        return path
