"""Before / after: the same measurements on an older commit and on the working tree, in one run.

Usage: python benchmarks/before_after.py --baseline REV [--only step frame mesh] [--repeats 3]

The baseline is exported with ``git archive REV`` into a temporary folder and imported from there
(``PYTHONPATH``); every measurement runs in its own process, baseline and current alternating, so both see
the same machine.  Measurements use only interfaces that both versions have:

* ``step``: one whole ``triplane-gan-tiny`` training step (``GanTrainer.train_iteration``: D step, G step,
  R1 and density regularisation at their intervals, EMA, data) on the embedded shapes, the preset's settings at
  issue 10's baseline (batch 4 x 3 views, 32², 16 + 16 samples per ray, whatever the preset now uses); mean over
  8 steps after 4 warm-up steps.
* ``frame-tiny`` / ``frame-paper``: one 256² frame of the viewer (``model.get_outputs_for_camera``), random
  weights, EMA generator, planes cached as in the viewer; the tiny preset at 16 + 16 samples per ray, as above.
* ``mesh-tiny``: the density of the 256³ lattice (``surface.density_grid``), random weights.
* ``frame-paper-trained`` (needs ``--run RUN_DIR``, a trained tiny run): the viewer's 256² frame of the paper
  preset's field carrying each class's latent of that run (``paper_frame.py``), with the latent's occupancy grid;
  mean over the classes.

Prints one Markdown table: figure, baseline seconds, current seconds, speed-up.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
FIGURES = ("step", "frame-tiny", "frame-paper", "mesh-tiny", "frame-paper-trained")


def _best(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def _model(preset: str):
    sys.path.insert(0, str(HERE))
    from presets import preset_model

    # the tiny preset at issue 10's baseline settings, whatever the preset now uses
    model, _ = preset_model(preset, "cpu", samples_per_ray=16 if preset == "tiny" else None)
    return model.eval()


def measure(figure: str, repeats: int) -> float:
    import torch

    if figure == "step":
        sys.path.insert(0, str(HERE))
        from presets import tiny_trainer

        trainer = tiny_trainer(samples_per_ray=16)
        for step in range(4):
            trainer.train_iteration(step)
        start = time.perf_counter()
        for step in range(4, 12):
            trainer.train_iteration(step)
        return (time.perf_counter() - start) / 8
    if figure == "frame-paper-trained":
        sys.path.insert(0, str(HERE))
        from paper_frame import trained_copies

        times = []
        for _, _, _, paper, planes, camera in trained_copies(Path(os.environ["TRIPLANE_GAN_BENCH_RUN"])):
            gen = paper.generator_ema
            with torch.no_grad():
                grid = gen.occupancy_grid(planes)
                times.append(_best(lambda: gen.render_camera(planes, camera, paper.config.eval_num_rays_per_chunk, grid), repeats))
        return sum(times) / len(times)
    if figure.startswith("frame-"):
        try:
            from triplane_gan_ns.cameras import yaw_pitch_directions
        except ImportError:  # revisions before the camera module
            from triplane_gan_ns.pose_samplers.base import yaw_pitch_directions

        model = _model(figure.split("-")[1])
        direction = yaw_pitch_directions(torch.tensor([0.5]), torch.tensor([0.3]))
        camera = model.pose_sampler.cameras_from_directions(direction, 256)
        with torch.no_grad():
            return _best(lambda: model.get_outputs_for_camera(camera), repeats)
    if figure == "mesh-tiny":
        try:
            from triplane_gan_ns.surface import density_grid
        except ImportError:  # revisions before density_grid moved below the tools
            from triplane_gan_ns.export.mesh import density_grid

        model = _model("tiny")
        gen = model.generator_ema
        with torch.no_grad():
            planes = gen.planes(gen.mapping(torch.randn(1, gen.backbone.z_dim), torch.tensor([0])), noise_mode="const")
            return _best(lambda: density_grid(lambda p: gen.field.query(planes, p)[0][..., 0], 256, 1.0), repeats)
    raise ValueError(figure)


def run(figure: str, repeats: int, pythonpath: Path) -> float:
    env = dict(os.environ, PYTHONPATH=str(pythonpath), PYTHONWARNINGS="ignore")
    cmd = [sys.executable, __file__, "--one", figure, "--repeats", str(repeats)]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=pythonpath)
    if out.returncode != 0:
        raise SystemExit(f"{figure} failed in {pythonpath}:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])["seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", required=False, help="git revision to compare against")
    parser.add_argument("--only", nargs="+", default=list(FIGURES), choices=FIGURES)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--run", type=Path, help="a trained tiny run's folder, for frame-paper-trained")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run is not None:  # the measuring processes read it from their environment
        os.environ["TRIPLANE_GAN_BENCH_RUN"] = str(args.run.resolve())
    elif "frame-paper-trained" in args.only and not args.one:
        if args.only == list(FIGURES):
            args.only.remove("frame-paper-trained")
        else:
            parser.error("frame-paper-trained needs --run RUN_DIR (a trained tiny run, e.g. make demo's)")
    if args.one:
        print(json.dumps({"seconds": measure(args.one, args.repeats)}))
        return
    if not args.baseline:
        parser.error("--baseline REV is required (e.g. the commit before the change)")
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.baseline], capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", tmp], input=archive.stdout, check=True)
        (Path(tmp) / "triplane_gan_ns" / "method_configs").symlink_to(Path(tmp) / "method_configs")
        head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
        print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}; "
              f"baseline {args.baseline}, current {head.stdout.strip()} + working tree")
        print("| figure | baseline (s) | current (s) | speed-up |")
        print("| --- | ---: | ---: | ---: |")
        for figure in args.only:
            before = run(figure, args.repeats, Path(tmp))
            after = run(figure, args.repeats, ROOT)
            print(f"| {figure} | {before:.3f} | {after:.3f} | {before / after:.2f}× |", flush=True)


if __name__ == "__main__":
    main()
