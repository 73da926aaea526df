"""R1's double backward with the resampling filters differentiated by torch's generic grouped convolution (before)
and by ``layers._DepthwiseFilter`` (now), alternating in one process.

Usage: python benchmarks/r1_filter.py [--presets tiny paper] [--batch 4 1] [--repeats 5] [--device cpu]

Random weights and random real images; the R1 penalty of the preset's discriminator on ``batch`` photos
(dual discrimination where the preset has it), backward into the discriminator, mean of ``--repeats`` after a
warm-up, two rounds.  Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import platform
import time

import torch
import torch.nn.functional as F

from presets import preset_model


def grouped_filter(x, f, pad, gain=1.0):
    """The filter as before: a grouped ``conv2d`` differentiated by autograd."""
    x = F.pad(x, [pad[0], pad[1], pad[0], pad[1]])
    return F.conv2d(x, (f * gain).flip([0, 1]).to(x.dtype)[None, None].repeat(x.shape[1], 1, 1, 1), groups=x.shape[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["tiny", "paper"])
    parser.add_argument("--batch", nargs="+", type=int, default=[4, 1], help="one per preset")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    from triplane_gan_ns import layers
    from triplane_gan_ns.training import losses

    ours = layers.fir_filter2d
    variants = (("torch's grouped conv", grouped_filter), ("_DepthwiseFilter", ours))
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"device {args.device}")
    print("| preset | batch | R1 before (s) | R1 now (s) | speed-up |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for preset, batch in zip(args.presets, args.batch):
        model, resolution = preset_model(preset, args.device)
        disc = model.discriminator
        labels = torch.arange(batch, device=args.device) % 10
        real = torch.rand(batch, 3, resolution, resolution, device=args.device)
        neural = model.config.generator.neural_resolution

        def r1() -> None:
            images = real.detach().requires_grad_(True)
            raw = model.neural_copy(real, neural).requires_grad_(True)
            leaves = (images, raw) if model.dual_discrimination else (images,)
            logits = disc(model.discriminator_images(images, raw) * 2 - 1, labels)
            losses.r1_penalty(logits, *leaves).backward()

        def timed() -> float:
            r1()
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            start = time.perf_counter()
            for _ in range(args.repeats):
                r1()
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            return (time.perf_counter() - start) / args.repeats

        times = {name: [] for name, _ in variants}
        for _ in range(2):
            for name, fir in variants:
                layers.fir_filter2d = fir  # the module's resampling functions look it up at call time
                times[name].append(timed())
        layers.fir_filter2d = ours
        before, now = (min(times[name]) for name, _ in variants)
        print(f"| {preset} | {batch} | {before:.4f} | {now:.4f} | {before / now:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
