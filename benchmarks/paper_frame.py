"""The paper preset's 256² viewer frame on a trained generator's latent, on this machine.

Usage: python benchmarks/paper_frame.py RUN_DIR [--classes 0 1 2 3] [--resolution 256] [--repeats 2]

For a before / after comparison run it twice, once with ``PYTHONPATH`` pointing at an older revision's tree
(``git archive REV | tar -x -C /tmp/old``), from this folder.

A frame's cost depends on the field's architecture, the samples per ray and where the density is: with random
weights the paper preset fills the box with haze (nothing to skip), and no paper-scale generator can be trained
on 2 CPU cores.  So this script takes a trained run of the tiny preset (RUN_DIR, e.g. the output of ``make
demo``) and copies each class's preview latent (seed 0, the run's preview truncation) into the paper preset's
field, as exactly as bilinear upsampling allows: its 8-channel 32² planes bilinearly upsampled into channels 0-7
of 32-channel 256² planes (the other channels zero), and its 2 x 32 decoder embedded in the paper's 3 x 64 one
(the extra hidden layer passes its input through ``softplus(x + 16) - 16``, exact to ~1e-6).  The copy then has
the paper preset's cost per sample and a trained generator's empty space.  It is rendered as the viewer renders
it (``TriplaneGenerator.render_camera``: chunks of rays, RGB only, 48 + 48 samples per ray) with the latent's
occupancy grid (threshold ``occupancy.THRESHOLD``), with the grid of the earlier threshold 1e-2, with the coarse
pass of before (all occupied coarse samples at once, without early termination) and, once, with full sampling.
Prints one Markdown row per class; the images of the first class (full sampling | skipping) go to ``--save`` if given.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PASS_THROUGH = 16.0
"""Shift that makes the extra hidden layer's softplus the identity: softplus(x + 16) - 16 = x within ~1e-6 in
float32 (e^-16 = 1.1e-7, and float32's spacing at 16 is 1.9e-6) for x >= 0; hidden activations are softplus
outputs, so never negative."""


def embed(tiny_field, tiny_planes, paper_field, resolution: int):
    """Paper-scale planes for ``paper_field``, whose decoder weights are overwritten so that it computes
    ``tiny_field`` on ``tiny_planes``."""
    import torch
    import torch.nn.functional as F

    try:
        from triplane_gan_ns.fields.triplane import lookup_layout
    except ImportError:  # revisions before the channels-last planes: the viewer's planes were as made
        lookup_layout = lambda planes: planes  # noqa: E731

    t_layers, p_layers = tiny_field.decoder.layers, paper_field.decoder.layers
    if len(t_layers) + 1 != len(p_layers):
        raise SystemExit("expected the tiny decoder to have one hidden layer fewer than the paper preset's")
    channels = tiny_planes.shape[2]
    planes = torch.zeros(1, 3, paper_field.plane_channels, resolution, resolution)
    planes[0, :, :channels] = F.interpolate(tiny_planes[0], size=(resolution, resolution), mode="bilinear", align_corners=False)
    hidden = t_layers[0].weight.shape[0]
    with torch.no_grad():
        for layer in p_layers:
            layer.weight.zero_()
            layer.bias.zero_()

        def put(layer, weight, bias):
            out, inp = weight.shape
            layer.weight[:out, :inp] = weight / layer.scale
            layer.bias[:out] = bias

        for t, p in zip(t_layers[:-1], p_layers[:-2]):
            put(p, t.effective_weight(), t.bias)
        put(p_layers[-2], torch.eye(hidden), torch.full((hidden,), PASS_THROUGH))
        last = t_layers[-1].effective_weight()
        put(p_layers[-1], last, t_layers[-1].bias - PASS_THROUGH * last.sum(dim=1))
    return lookup_layout(planes)  # as the viewer's planes (``TriplaneGenerator.fixed_planes``)


def _best(fn, repeats: int):
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def trained_copies(run_dir: Path, classes=None, resolution: int = 256):
    """For each class of the run (``classes``: indices, default all): (class name, the run's tiny model, its
    latent's planes, the paper model, the paper-scale copy's planes, the viewer's camera at ``resolution``²)."""
    import torch

    sys.path.insert(0, str(HERE))
    from presets import preset_model

    from triplane_gan_ns.cameras import yaw_pitch_directions
    from triplane_gan_ns.runs import load_model
    from triplane_gan_ns.viewer_controls import PreviewLatent

    tiny, _ = load_model(run_dir / "config.yml")
    paper, _ = preset_model("paper", "cpu")
    paper.eval()
    direction = yaw_pitch_directions(torch.tensor([0.5]), torch.tensor([0.3]))
    camera = paper.pose_sampler.cameras_from_directions(direction, resolution)
    plane_resolution = paper.generator.backbone.plane_resolution
    for c in classes if classes is not None else range(tiny.num_classes):
        with torch.no_grad():
            _, tiny_planes, _ = tiny._preview_planes(PreviewLatent(c, 0, tiny.config.preview_truncation))
            planes = embed(tiny.generator_ema.field, tiny_planes, paper.generator_ema.field, plane_resolution)
        yield tiny.class_names[c], tiny, tiny_planes, paper, planes, camera


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path, help="a tiny-preset run's folder (config.yml, nerfstudio_models/)")
    parser.add_argument("--classes", type=int, nargs="+", default=None, help="class indices (default: all)")
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--save", type=Path, default=None, help="PNG of the first class: full sampling | skipping")
    args = parser.parse_args()

    import torch

    from triplane_gan_ns import renderer
    from triplane_gan_ns.occupancy import OccupancyGrid

    header = False
    for name, tiny, tiny_planes, paper, planes, camera in trained_copies(args.run_dir, args.classes, args.resolution):
        gen = paper.generator_ema
        chunk = paper.config.eval_num_rays_per_chunk
        if not header:
            print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, threads "
                  f"{torch.get_num_threads()}, {args.resolution}² frame, {gen.config.num_coarse_samples} + "
                  f"{gen.config.num_importance_samples} samples per ray, paper-scale field carrying {args.run_dir}'s latents")
            print("| class | occupied share, threshold 1e-2 → 0.1 | full sampling (s) | skipping at 1e-2 (s) "
                  "| skipping, coarse pass at once (s) | skipping (s) | skipping vs full at 1e-2 / now: mean (max) "
                  "difference, of 1/255 | copy vs tiny field at 48 + 48: mean difference (of 1/255) |")
            print("| --- | --- | ---: | ---: | ---: | ---: | --- | ---: |")
            header = True
        with torch.no_grad():
            grid = gen.occupancy_grid(planes)
            old_grid = OccupancyGrid.from_density(
                lambda p: gen.field.batched_density(planes, p[None])[0, :, 0], gen.config.scene_bound, threshold=1e-2
            )
            full_s, full = _best(lambda: gen.render_camera(planes, camera, chunk), 1)
            old_s, old = _best(lambda: gen.render_camera(planes, camera, chunk, old_grid), args.repeats)
            saved = renderer.COARSE_SEGMENT
            renderer.COARSE_SEGMENT = 1 << 30  # every occupied coarse sample at once, without early termination
            once_s, _ = _best(lambda: gen.render_camera(planes, camera, chunk, grid), args.repeats)
            renderer.COARSE_SEGMENT = saved
            fast_s, fast = _best(lambda: gen.render_camera(planes, camera, chunk, grid), args.repeats)
            # the tiny field itself at the paper's samples per ray: the copy's fidelity
            t_gen = tiny.generator_ema
            coarse, importance = t_gen.config.num_coarse_samples, t_gen.config.num_importance_samples
            t_gen.config.num_coarse_samples = gen.config.num_coarse_samples
            t_gen.config.num_importance_samples = gen.config.num_importance_samples
            reference = t_gen.render_camera(tiny_planes, camera, chunk)
            t_gen.config.num_coarse_samples, t_gen.config.num_importance_samples = coarse, importance
        diffs = [(out["rgb"] - full["rgb"]).abs() * 255 for out in (old, fast)]
        diff = " / ".join(f"{float(d.mean()):.3f} ({float(d.max()):.2f})" for d in diffs)
        copy = float(((full["rgb"] - reference["rgb"]).abs() * 255).mean())
        print(f"| {name} | {old_grid.fraction():.3f} → {grid.fraction():.3f} | {full_s:.2f} | {old_s:.2f} | {once_s:.2f} "
              f"| {fast_s:.2f} | {diff} | {copy:.3f} |", flush=True)
        if args.save is not None:
            from PIL import Image

            image = torch.cat([full["rgb"], fast["rgb"]], dim=1).clamp(0, 1)
            Image.fromarray((image * 255).round().byte().numpy()).save(args.save)
            args.save = None


if __name__ == "__main__":
    main()
