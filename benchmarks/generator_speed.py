"""Generator forward and forward+backward time per image, and peak memory, for the presets.

Usage: python benchmarks/generator_speed.py [--presets tiny paper] [--batch 2] [--repeats 3] [--device cpu]

Each (preset, mode) runs in its own process so that the peak memory (resident set size on CPU, allocator
peak on CUDA) belongs to that measurement alone.  Prints one Markdown table row per measurement.
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



def _measure(preset: str, mode: str, batch: int, repeats: int, device: str) -> dict:
    import torch


    model, resolution = preset_model(preset, device)
    model.train()
    z = torch.randn(batch, model.generator.backbone.z_dim, device=device)
    labels = torch.arange(batch, device=device) % 10

    def step():
        if mode == "forward":
            with torch.no_grad():
                out = model.generate(z, labels)
        else:
            out = model.generate(z, labels)
            out["image"].mean().backward()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return out

    step()  # warm-up
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    if device.startswith("cuda"):
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    gen = model.generator
    return {
        "preset": preset,
        "mode": mode,
        "batch": batch,
        "neural_res": gen.config.neural_resolution,
        "output_res": gen.output_resolution,
        "plane": f"3x{gen.backbone.plane_channels}x{gen.backbone.plane_resolution}^2",
        "samples_per_ray": gen.config.num_coarse_samples + gen.config.num_importance_samples,
        "params_m": sum(p.numel() for p in gen.parameters()) / 1e6,
        "s_per_image": min(times) / batch,
        "peak_mb": peak_mb,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["tiny", "paper"], choices=sorted(PRESETS))
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--one", nargs=2, metavar=("PRESET", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(_measure(args.one[0], args.one[1], args.batch, args.repeats, args.device)))
        return
    import torch

    print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"threads {torch.get_num_threads()}, device {args.device}")
    print("| preset | pass | batch | neural res | output res | planes | samples/ray | G params (M) | s / image | peak MB |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for preset in args.presets:
        for mode in ("forward", "forward+backward"):
            cmd = [sys.executable, __file__, "--one", preset, mode, "--batch", str(args.batch),
                   "--repeats", str(args.repeats), "--device", args.device]
            r = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1])
            print(f"| {r['preset']} | {r['mode']} | {r['batch']} | {r['neural_res']} | {r['output_res']} | {r['plane']} "
                  f"| {r['samples_per_ray']} | {r['params_m']:.1f} | {r['s_per_image']:.3f} | {r['peak_mb']:.0f} |")


if __name__ == "__main__":
    main()
