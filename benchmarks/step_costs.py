"""Discriminator step, generator step, R1, a whole training step and a viewer frame, at the tiny preset and at
paper scale (the ``triplane-gan`` preset), with renderer samples/s and peak memory.

Usage: python benchmarks/step_costs.py [--presets tiny paper] [--batch 1] [--viewer-res 128] [--device cpu] [--bf16]

Random weights and random "real" images (the data loader is measured by ``data_loader.py``).  One warm-up,
then the fastest of ``--repeats`` runs of each part, in one process per preset:

* D step: logits of ``batch`` real images and ``batch x views`` generated ones (rendered without gradients),
  the non-saturating loss, backward.
* G step: render ``views`` views of ``batch`` latents, score them, backward through D into G.
* R1: the gradient penalty's double backward on ``batch`` real images.
* whole step = D + G (+ R1 where it runs; the presets run it every 16th step).
* viewer frame: ``model.get_outputs_for_camera`` at ``--viewer-res``² (what the web viewer calls per frame),
  and the renderer's samples/s in it.

``--bf16`` computes the losses of D step, G step and R1 under bf16 autocast and their backward outside it, as
``--mixed-precision True`` trains (the frame stays float32, as the viewer renders).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time

from presets import PRESETS, preset_model



def _best(fn, repeats: int, device: str) -> float:
    import torch

    fn()
    times = []
    for _ in range(repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return min(times)


def _measure(preset: str, batch: int, repeats: int, viewer_res: int, device: str, bf16: bool = False) -> dict:
    import torch

    from triplane_gan_ns.training import losses

    model, resolution = preset_model(preset, device)
    model.train()
    disc = model.discriminator
    views = disc.views_per_latent
    z = torch.randn(batch, model.generator.backbone.z_dim, device=device)
    labels = torch.arange(batch, device=device) % 10
    real = torch.rand(batch, 3, resolution, resolution, device=device)
    neural = model.config.generator.neural_resolution

    def seen(out):  # the discriminator's input for renders (6 channels with dual discrimination)
        return model.discriminator_images(out["image"], out["image_raw"]) * 2 - 1

    def d_loss():
        with torch.no_grad():
            fake = model.generate(z, labels, views_per_latent=views)
        real_in = model.discriminator_images(real, model.neural_copy(real, neural)) * 2 - 1
        return losses.discriminator_loss(disc(real_in, labels), disc.score_generated(seen(fake), labels.repeat_interleave(views)))

    def g_loss():
        fake = model.generate(z, labels, views_per_latent=views)
        return losses.generator_loss(disc.score_generated(seen(fake), labels.repeat_interleave(views)))

    def r1_loss():
        images = real.detach().requires_grad_(True)
        raw = model.neural_copy(real, neural).requires_grad_(True)
        leaves = (images, raw) if model.dual_discrimination else (images,)
        return losses.r1_penalty(disc(model.discriminator_images(images, raw) * 2 - 1, labels), *leaves)

    def step(loss_fn):
        """The loss under bf16 autocast when asked for, its backward outside autocast: as the trainer runs a phase."""

        def run():
            with torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16, enabled=bf16):
                loss = loss_fn()
            loss.backward()

        return run

    d, g, r = (_best(step(fn), repeats, device) for fn in (d_loss, g_loss, r1_loss))
    model.eval()
    from triplane_gan_ns.cameras import yaw_pitch_directions

    camera = model.pose_sampler.cameras_from_directions(yaw_pitch_directions(torch.tensor([0.5]), torch.tensor([0.3])), viewer_res)
    with torch.no_grad():
        frame = _best(lambda: model.get_outputs_for_camera(camera.to(device)), repeats, device)
    gen = model.generator.config
    samples = viewer_res**2 * (gen.num_coarse_samples + gen.num_importance_samples)
    peak = torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "preset": preset + (" (bf16)" if bf16 else ""), "batch": batch, "views": views, "d_step": d, "g_step": g, "r1": r,
        "step": d + g, "step_r1": d + g + r, "frame": frame, "samples_per_s": samples / frame, "peak_mb": peak,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["tiny", "paper"], choices=sorted(PRESETS))
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--viewer-res", type=int, default=128)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--bf16", action="store_true", help="D, G and R1 under bf16 autocast")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(_measure(args.one, args.batch, args.repeats, args.viewer_res, args.device, args.bf16)))
        return
    import torch

    print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"threads {torch.get_num_threads()}, device {args.device}, viewer frame {args.viewer_res}²")
    print("| preset | batch × views | D step (s) | G step (s) | R1 (s) | step (s) | step with R1 (s) | viewer frame (s) | render samples/s | peak MB |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for preset in args.presets:
        cmd = [sys.executable, __file__, "--one", preset, "--batch", str(args.batch), "--repeats", str(args.repeats),
               "--viewer-res", str(args.viewer_res), "--device", args.device] + (["--bf16"] if args.bf16 else [])
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode != 0:
            raise SystemExit(f"{preset} failed:\n{out.stderr[-3000:]}")
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"| {r['preset']} | {r['batch']} × {r['views']} | {r['d_step']:.2f} | {r['g_step']:.2f} | {r['r1']:.2f} "
              f"| {r['step']:.2f} | {r['step_r1']:.2f} | {r['frame']:.2f} | {r['samples_per_s']:.3g} | {r['peak_mb']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
