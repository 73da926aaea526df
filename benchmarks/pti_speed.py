"""Seconds per PTI stage and peak memory for one photo, with a randomly initialised generator of a preset.

Usage: python benchmarks/pti_speed.py [--preset tiny|paper] [--latent-steps 50] [--generator-steps 50]
                                      [--perceptual lpips-vgg|efficientnet-lite0] [--device cpu]

Per-step times are what matter (the PTI defaults are 450 + 350 steps); the photo is scikit-image's
``chelsea`` at the preset's resolution.  LPIPS-VGG runs with its real structure and untrained backbone
weights when no VGG16 file is available (same cost).  Prints a Markdown table row.
"""

from __future__ import annotations

import argparse
import platform
import resource
import time

import torch

from presets import preset_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny", choices=["tiny", "paper"])
    parser.add_argument("--latent-steps", type=int, default=50)
    parser.add_argument("--generator-steps", type=int, default=50)
    parser.add_argument("--perceptual", default="lpips-vgg", choices=["lpips-vgg", "efficientnet-lite0"])
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    from skimage import data

    from triplane_gan_ns.errors import UserError
    from triplane_gan_ns.cameras import yaw_pitch_directions
    from triplane_gan_ns.pti.invert import InversionConfig, invert
    from triplane_gan_ns.pti.perceptual import LpipsVgg, build_perceptual

    model, resolution = preset_model(args.preset, args.device)
    model.eval()
    photo = torch.from_numpy(data.chelsea()).permute(2, 0, 1)[None].float() / 255
    side = min(photo.shape[-2:])
    photo = photo[..., :side, :side]
    target = torch.nn.functional.interpolate(photo, size=(resolution, resolution), mode="area").to(args.device)
    try:
        perceptual = build_perceptual(args.perceptual, device=args.device)
        note = ""
    except UserError:
        perceptual = LpipsVgg(random_backbone=True).to(args.device)
        note = " (untrained VGG weights)"
    camera = model.pose_sampler.cameras_from_directions(
        yaw_pitch_directions(torch.zeros(1), torch.zeros(1)), model.config.generator.neural_resolution
    ).to(args.device)
    times = {}

    def progress(stage, step, total, row):
        times.setdefault(stage, [time.perf_counter()]).append(time.perf_counter())

    config = InversionConfig(latent_steps=args.latent_steps, generator_steps=args.generator_steps, stop_perceptual=0.0)
    invert(model.generator_ema, target, 0, camera, perceptual, config, progress)
    if args.device.startswith("cuda"):
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    per_step = {k: (v[-1] - v[1]) / max(len(v) - 2, 1) for k, v in times.items()}
    print(f"machine: {platform.machine()} {platform.processor()}, torch {torch.__version__}, "
          f"threads {torch.get_num_threads()}, device {args.device}")
    print("| preset | resolution | perceptual | stage 1 s/step | stage 2 s/step | est. 450+350 steps (s) | peak MB |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    total = 450 * per_step["latent"] + 350 * per_step["generator"]
    print(f"| {args.preset} | {resolution}² | {args.perceptual}{note} | {per_step['latent']:.3f} "
          f"| {per_step['generator']:.3f} | {total:.0f} | {peak:.0f} |")


if __name__ == "__main__":
    main()
