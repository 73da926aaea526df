"""nerfstudio Trainer with a GAN step: a discriminator update, then a generator update, each with its own
optimizer, then the pipeline's bookkeeping (EMA, augmentation).

Long runs: a step whose loss or gradients are not finite is skipped and logged; after
``max_consecutive_bad_steps`` of them the run stops with a clear message and the last checkpoint intact.
Checkpoints hold the pipeline (G, G_ema, D, augmentation state), optimizers, RNG states and the step; they are
written atomically and read with ``torch.load(weights_only=True)``.  Each checkpoint is accompanied by a PNG
grid of samples and, on data with known true shapes (the embedded shapes, mesh renders), by the pose-free
geometry measure of ``alignment.py`` (logged under ``Geometry/`` and appended to ``geometry.jsonl``).
"""

from __future__ import annotations

import functools
import json
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional, Set, Type

import numpy as np
import torch
import torch.distributed as dist
from nerfstudio.configs.base_config import LoggingConfig
from nerfstudio.engine.trainer import Trainer, TrainerConfig
from nerfstudio.utils import writer
from nerfstudio.utils.decorators import check_main_thread
from nerfstudio.utils.rich_utils import CONSOLE
from PIL import Image

from triplane_gan_ns import alignment
from triplane_gan_ns.allocator import keep_freed_memory
from triplane_gan_ns.data.class_index import CLASS_INDEX, write_class_index
from triplane_gan_ns.errors import UserError
from triplane_gan_ns.generator import check_neural_resolution
from triplane_gan_ns.fileio import atomic_write, check_creatable_dir, remove_stale_temporaries
from triplane_gan_ns.runs import (
    checkpoint_steps,
    load_checkpoint_file,
    save_checkpoint_file,
    state_dict_mismatch,
)
from triplane_gan_ns.training.pipeline import GanPipeline, GanPipelineConfig
from triplane_gan_ns.training.progress import IMAGES_PER_SEC, GanLocalWriterConfig

PHASES = ("discriminator", "generator")
MAX_PREVIEW_RESOLUTION = 256
"""Largest ``--preview-resolution``: every save renders each class's views and the orbit's frames at this size
(in chunks of rays, so memory stays bounded; the time grows with the square of the size)."""
_FRESH_CONFIGS: Set[Path] = set()
"""config.yml files written by this process for a run that has not started yet."""


@dataclass
class GanTrainerConfig(TrainerConfig):
    """nerfstudio's trainer settings plus the GAN alternation."""

    _target: Type = field(default_factory=lambda: GanTrainer)
    pipeline: GanPipelineConfig = field(default_factory=GanPipelineConfig)
    """The GAN pipeline."""
    logging: LoggingConfig = field(default_factory=lambda: LoggingConfig(local_writer=GanLocalWriterConfig()))
    """nerfstudio's logging; the terminal table shows images/s."""
    sample_grid_views: int = 6
    """Views (columns) of the sample grid written with every checkpoint."""
    orbit_frames: int = 24
    """Frames of the fixed-latent orbit GIF written with every checkpoint (0 = none)."""
    preview_resolution: Optional[int] = None
    """Side of each view of that sample grid and orbit; None: the neural resolution.  A generator without
    super-resolution renders its field at any size, so a small one can be shown larger than it trains (the tiny
    preset: 32² images, 128² previews; at most 256); a super-resolving generator's previews are always its output
    images."""
    max_grad_norm: float = float("inf")
    """A step whose gradient norm exceeds this (or is not finite) is skipped."""
    max_consecutive_bad_steps: int = 20
    """Stop after this many skipped steps in a row."""
    geometry_objects_per_class: int = 2
    """On data with known true shapes: at every checkpoint, this many generated objects per class are meshed,
    aligned to the true shapes over rotations and scored (F-score@0.05, IoU, class-correct; ``alignment.py``),
    logged under ``Geometry/`` and appended to ``geometry.jsonl`` in the run folder (0 = off)."""
    geometry_resolution: int = 48
    """Density lattice points per axis for those meshes."""
    compile: bool = False
    """torch.compile the backbone's synthesis network and the discriminator (R1 steps run the discriminator
    eagerly: compiled graphs have no double backward)."""
    compile_backend: str = "inductor"
    """torch.compile backend (``aot_eager`` traces without generating kernels)."""

    def check_settings(self) -> None:
        """One-line errors for settings that cannot train, checked before anything is written."""
        if self.max_num_iterations < 1:
            raise UserError(f"--max-num-iterations {self.max_num_iterations}: train for at least 1 step")
        if self.steps_per_save < 1:
            raise UserError(f"--steps-per-save {self.steps_per_save}: save at least every 1 step")
        datamanager = self.pipeline.datamanager
        if datamanager.batch_size < 1:
            raise UserError(f"--pipeline.datamanager.batch-size {datamanager.batch_size}: use at least 1")
        check_neural_resolution(self.pipeline.model.generator.neural_resolution, datamanager.resolution)
        size = self.preview_resolution
        if size is not None and not 1 <= size <= MAX_PREVIEW_RESOLUTION:
            raise UserError(
                f"--preview-resolution {size}: use 1 to {MAX_PREVIEW_RESOLUTION}, or None (every save renders its "
                "previews at this size; `triplane-gan render --resolution` renders larger views)"
            )
        try:
            check_creatable_dir(Path(self.output_dir))
        except UserError as err:
            raise UserError(f"--output-dir {self.output_dir}: {err}") from None

    def save_config(self) -> None:
        """Check the settings, then write ``config.yml`` (nerfstudio does this before training starts), recording
        where the run's class index will be (the viewers show the generator from it when the data is gone)."""
        self.check_settings()
        self.pipeline.datamanager.run_class_index = self.get_base_dir() / CLASS_INDEX
        super().save_config()
        _FRESH_CONFIGS.add(self.get_base_dir() / "config.yml")


def _logged_step(line: str) -> int:
    """The step of one ``geometry.jsonl`` line (a damaged line counts as after every step, so it is dropped)."""
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return 2**62


def rng_state() -> Dict[str, torch.Tensor]:
    """Every RNG the training loop draws from, as tensors (loadable with weights_only=True)."""
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy_keys": torch.from_numpy(np_state[1].astype(np.int64)),
        "numpy_pos": torch.tensor([np_state[2], np_state[3]], dtype=torch.int64),
        "numpy_gauss": torch.tensor([np_state[4]], dtype=torch.float64),
        "python": torch.tensor(random.getstate()[1], dtype=torch.int64),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.stack(torch.cuda.get_rng_state_all())
    return state


def set_rng_state(state: Dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(state["torch"])
    pos, has_gauss = (int(v) for v in state["numpy_pos"])
    np.random.set_state(
        ("MT19937", state["numpy_keys"].numpy().astype(np.uint32), pos, has_gauss, float(state["numpy_gauss"][0]))
    )
    random.setstate((3, tuple(int(v) for v in state["python"]), None))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(list(state["cuda"]))


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 in hardware (AVX512-BF16 or AMX), where bf16 autocast halves the cost of
    convolutions and matrix products; elsewhere torch emulates bf16, slower than float32."""
    cpu = getattr(torch, "cpu", None)
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(cpu, name, lambda: False)()) for name in checks)


class GanTrainer(Trainer):
    config: GanTrainerConfig
    pipeline: GanPipeline

    def __init__(self, config: GanTrainerConfig, local_rank: int = 0, world_size: int = 1) -> None:
        super().__init__(config, local_rank, world_size)
        # bf16 autocast, decided once: on GPUs with bf16, and on CPUs with native bf16 (nerfstudio: never on CPUs)
        if self.device.startswith("cuda") and config.mixed_precision:
            self.mixed_precision = torch.cuda.is_bf16_supported()
        if self.device == "cpu" and config.mixed_precision:
            self.mixed_precision = cpu_has_native_bf16()
            CONSOLE.print(
                "Mixed precision: bf16 autocast on this CPU (native bf16)."
                if self.mixed_precision
                else "Mixed precision stays off: this CPU has no native bf16 (AVX512-BF16 or AMX), float32 is faster."
            )

    def setup(self, test_mode="val") -> None:
        keep_freed_memory()  # no page faults for a step's short-lived tensors (allocator.py)
        try:
            super().setup(test_mode)
        except BaseException:
            self._remove_unstarted_run()
            raise
        self._bad_steps = 0
        self._true_shapes: Optional[Dict] = None
        for folder in (self.base_dir, self.base_dir / "samples", self.checkpoint_dir):  # left by a killed run
            remove_stale_temporaries(folder)
        self.write_class_index()
        if self.config.compile:  # compile the forwards, keeping module names (and checkpoint keys) unchanged
            model = self.pipeline.gan_model
            backend = self.config.compile_backend
            model.generator.backbone.synthesis = torch.compile(model.generator.backbone.synthesis, backend=backend)
            model.discriminator.forward = torch.compile(model.discriminator.forward, backend=backend)

    def _remove_unstarted_run(self) -> None:
        """After a failed setup: remove the config.yml this process wrote for the run, and the run folders that
        are then empty, unless the run folder holds anything else."""
        config_path = self.base_dir / "config.yml"
        if config_path not in _FRESH_CONFIGS or not config_path.is_file():
            return
        if any(p.is_file() and p != config_path for p in self.base_dir.rglob("*")):
            return
        config_path.unlink()
        _FRESH_CONFIGS.discard(config_path)
        folder, stop = self.base_dir.absolute(), Path(self.config.output_dir).absolute()
        try:
            for empty in sorted(folder.rglob("*"), reverse=True):  # only empty folders are left
                empty.rmdir()
            while folder != stop and stop in folder.parents:  # the run folder, then its parents while empty
                folder.rmdir()
                folder = folder.parent
        except OSError:
            pass

    @check_main_thread
    def write_class_index(self) -> Path:
        """``class_index.json`` in the run folder (``data/class_index.py``)."""
        model = self.pipeline.gan_model
        metadata = self.pipeline.datamanager.train_dataset.metadata
        ids = list(metadata.get("class_ids", model.class_names))
        return write_class_index(self.base_dir, model.resolution, ids, model.class_names)

    def _autocast(self):
        """bf16 autocast where ``self.mixed_precision`` (see ``__init__``), otherwise fp32.  Parameters, optimizer
        states and the EMA stay fp32."""
        device_type = self.device.split(":")[0]
        return torch.autocast(device_type=device_type, dtype=torch.bfloat16, enabled=self.mixed_precision)

    def train_iteration(self, step: int):
        start = time.perf_counter()
        loss_dict: Dict[str, torch.Tensor] = {}
        metrics_dict: Dict[str, torch.Tensor] = {}
        skipped = []
        for phase in PHASES:
            self.optimizers.zero_grad_some([phase])
            with self._autocast():
                losses, metrics = self.pipeline.gan_losses(step, phase)  # type: ignore[arg-type]
                loss = functools.reduce(torch.add, losses.values())
            loss_dict.update({k: v.detach().float() for k, v in losses.items()})
            metrics_dict.update(metrics)
            loss.backward()
            finite, grad_norm = self._reduce_grads(phase, loss)
            metrics_dict[f"grad_norm_{phase}"] = grad_norm
            if finite and grad_norm <= self.config.max_grad_norm:
                self.optimizers.optimizer_step(phase)
            else:
                self.optimizers.zero_grad_some([phase])
                skipped.append(phase)
        if skipped:
            self._bad_steps += 1
            CONSOLE.print(f"[yellow]step {step}: non-finite or exploding {' and '.join(skipped)} loss/gradients; step skipped")
            if self._bad_steps >= self.config.max_consecutive_bad_steps:
                raise UserError(
                    f"training stopped at step {step} after {self._bad_steps} consecutive non-finite steps; "
                    f"the last good checkpoint is in {self.checkpoint_dir}; lower the learning rates or raise r1_gamma"
                )
        else:
            self._bad_steps = 0
        self.pipeline.after_step(step)
        self.optimizers.scheduler_step_all(step)
        metrics_dict["skipped_steps_in_a_row"] = torch.tensor(float(self._bad_steps))
        total = functools.reduce(torch.add, loss_dict.values())
        images = self.world_size * self.pipeline.datamanager.config.batch_size
        writer.put_time(name=IMAGES_PER_SEC, duration=images / max(1e-6, time.perf_counter() - start), step=step)
        return total, loss_dict, metrics_dict

    def _reduce_grads(self, phase: str, loss: torch.Tensor) -> tuple[bool, torch.Tensor]:
        """Average the phase's gradients (and its loss) over ranks in one all-reduce; report whether all are
        finite on every rank, and the gradient norm.  Every rank reaches the same decision."""
        params = self.optimizers.parameters[phase]
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1) for g in grads] + [loss.detach().float().reshape(1)])
        if self.world_size > 1 and dist.is_initialized():
            dist.all_reduce(flat)
            flat /= self.world_size
            offset = 0
            for p, g in zip(params, grads):
                p.grad = flat[offset : offset + g.numel()].view_as(g)
                offset += g.numel()
        return bool(torch.isfinite(flat).all()), flat[:-1].norm().detach()

    @check_main_thread
    def save_checkpoint(self, step: int) -> None:
        """Write the sample grid and the geometry measure, then save pipeline, optimizers, RNG states and step
        atomically.  The checkpoint comes last, so a run killed while writing the step's samples resumes from the
        checkpoint before and writes them again."""
        self.write_samples(step)
        self.log_geometry(step)
        pipeline = self.pipeline.module if hasattr(self.pipeline, "module") else self.pipeline  # type: ignore
        state = {
            "step": step,
            "pipeline": pipeline.state_dict(),
            "optimizers": {k: v.state_dict() for (k, v) in self.optimizers.optimizers.items()},
            "schedulers": {k: v.state_dict() for (k, v) in self.optimizers.schedulers.items()},
            "scalers": self.grad_scaler.state_dict(),
            "rng": rng_state(),
        }
        ckpt_path = self.checkpoint_dir / f"step-{step:09d}.ckpt"
        save_checkpoint_file(ckpt_path, state)
        if self.config.save_only_latest_checkpoint:
            for f in checkpoint_steps(self.checkpoint_dir).values():
                if f != ckpt_path:
                    f.unlink()

    def _load_checkpoint(self) -> None:
        """Resume from ``--load-dir`` (latest or ``--load-step``) or ``--load-checkpoint``, restoring RNGs."""
        path = None
        if self.config.load_dir is not None:
            load_dir = Path(self.config.load_dir)
            steps = checkpoint_steps(load_dir)
            if not steps:
                raise UserError(f"no step-*.ckpt checkpoint in {load_dir}; point --load-dir at a run's nerfstudio_models")
            step = self.config.load_step if self.config.load_step is not None else list(steps)[-1]
            if step not in steps:
                raise UserError(
                    f"--load-step {step}: no such checkpoint in {load_dir} (steps {', '.join(map(str, steps))})"
                )
            path = steps[step]
        elif self.config.load_checkpoint is not None:
            path = Path(self.config.load_checkpoint)
        if path is None:
            CONSOLE.print("No checkpoint to load, so training from scratch.")
            return
        state = load_checkpoint_file(path)
        try:
            self.pipeline.load_pipeline(state["pipeline"], state["step"])
            self.optimizers.load_optimizers(state["optimizers"])
        except (RuntimeError, KeyError, ValueError) as err:
            reason = state_dict_mismatch(self.pipeline, state["pipeline"]) or str(err).splitlines()[0]
            raise UserError(
                f"checkpoint {path} does not match this configuration ({reason}); resume with the settings it was "
                f"trained with"
            ) from None
        if "schedulers" in state and self.config.load_scheduler:
            self.optimizers.load_schedulers(state["schedulers"])
        self.grad_scaler.load_state_dict(state["scalers"])
        if "rng" in state:
            set_rng_state(state["rng"])
            if self.world_size > 1:  # ranks must keep drawing different latents: derive one seed per rank
                torch.manual_seed(int(torch.randint(2**31, ())) + dist.get_rank())
        self._start_step = state["step"] + 1
        self.pipeline.datamanager.skip_to_step(self._start_step)
        CONSOLE.print(f"Resumed from {path} at step {self._start_step}")

    @check_main_thread
    def log_geometry(self, step: int) -> Optional[Dict[str, float]]:
        """The pose-free geometry measure of the EMA generator against the data's true shapes (``None`` when the
        data has none or it is switched off): logged, printed and appended to ``geometry.jsonl``."""
        per_class = self.config.geometry_objects_per_class
        if per_class <= 0:
            return None
        dataset = self.pipeline.datamanager.train_dataset
        if self._true_shapes is None:
            self._true_shapes = alignment.known_shapes(dataset.image_filenames, dataset.labels.tolist(), per_class=2)
        if not self._true_shapes:
            return None
        model = self.pipeline.gan_model
        saved = rng_state()  # the training RNG streams stay untouched: a resumed run continues identically
        try:
            scores = alignment.aligned_geometry_scores(
                model.generator_ema,
                self._true_shapes,
                num_per_class=per_class,
                resolution=self.config.geometry_resolution,
                class_names=model.class_names,
                seed=0,
            )
        finally:
            set_rng_state(saved)
        writer.put_dict(name="Geometry", scalar_dict=scores, step=step)
        CONSOLE.print(
            f"geometry at step {step}: F-score@0.05 {scores['shape_fscore']:.3f}, IoU {scores['shape_iou']:.3f}, "
            f"class-correct {scores['shape_class_correct']:.0f}/{scores['shape_num_classes']:.0f}"
        )
        path = self.base_dir / "geometry.jsonl"
        # a resumed run measures again the steps after its checkpoint: keep only the earlier lines
        kept = [line for line in (path.read_text().splitlines() if path.is_file() else []) if _logged_step(line) < step]
        lines = kept + [json.dumps({"step": step, **scores})]
        atomic_write(path, lambda tmp: tmp.write_text("\n".join(lines) + "\n"))
        return scores

    def write_samples(self, step: int) -> Path:
        """``samples/samples-STEP.png``: classes (rows) x azimuths (columns) of the EMA generator, and
        ``samples/orbit-latest.gif``: the fixed latent (class 0, seed 0) turning around; both also logged."""
        model = self.pipeline.gan_model
        resolution = self.config.preview_resolution
        grid = model.sample_grid(num_views=self.config.sample_grid_views, resolution=resolution)
        array = (grid.permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)
        path = self.base_dir / "samples" / f"samples-{step:09d}.png"
        for target in (path, path.with_name("samples-latest.png")):
            atomic_write(target, lambda tmp: Image.fromarray(array).save(tmp, format="PNG"))
        writer.put_image(name="Samples/grid", image=grid.permute(1, 2, 0).cpu(), step=step)
        if self.config.orbit_frames > 0:
            frames = model.orbit(0, 0, self.config.orbit_frames, resolution=resolution)
            images = [Image.fromarray(f) for f in (frames.permute(0, 2, 3, 1).cpu().numpy() * 255).round().astype(np.uint8)]
            atomic_write(
                path.with_name("orbit-latest.gif"),
                lambda tmp: images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:], duration=80, loop=0),
            )
            writer.put_image(name="Samples/orbit", image=torch.cat(list(frames[:: max(1, len(frames) // 8)]), dim=2).permute(1, 2, 0).cpu(), step=step)
        return path
