"""How a full training step (discriminator + generator update) grows with neural rendering resolution, samples
per ray and batch size, with and without R1; a Markdown table and a plot.

Usage: python benchmarks/scaling.py [--device cpu] [--steps 3] [--plot docs/images/scaling.png]

Starts from the ``triplane-gan-tiny`` preset at issue 10's baseline settings (32² neural rendering, 16+16
samples per ray, batch 4, 3 views per latent) and varies one setting at a time.  Each configuration runs in its
own process (so its peak memory is its own): one warm-up step, then ``--steps`` timed steps of
``GanTrainer.train_iteration``; the fastest is reported.  "R1" rows run the R1 penalty on every step (the tiny
preset's lazy R1 runs it every 4th), the other rows never.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BASE = {"resolution": 32, "samples": 16, "batch": 4, "r1": False}
SWEEPS = {"resolution": [16, 32, 64], "samples": [8, 16, 32], "batch": [2, 4, 8], "r1": [False, True]}


def _measure(setting: dict, steps: int, device: str) -> dict:
    import copy

    import torch

    from triplane_gan_ns.method_configs.triplane_gan import triplane_gan_tiny

    torch.manual_seed(0)
    cfg = copy.deepcopy(triplane_gan_tiny.config)
    cfg.machine.device_type = device.split(":")[0]
    cfg.vis = "tensorboard"
    cfg.pipeline.datamanager.resolution = setting["resolution"]
    cfg.pipeline.datamanager.batch_size = setting["batch"]
    generator = cfg.pipeline.model.generator
    generator.neural_resolution = setting["resolution"]
    generator.num_coarse_samples = generator.num_importance_samples = setting["samples"]
    cfg.pipeline.r1_interval = 1
    cfg.pipeline.r1_gamma = 1.0 if setting["r1"] else 0.0
    with tempfile.TemporaryDirectory() as tmp:
        cfg.output_dir = Path(tmp)
        cfg.set_timestamp()
        trainer = cfg.setup(local_rank=0, world_size=1)
        trainer.setup()
        trainer.train_iteration(0)
        times = []
        for step in range(1, steps + 1):
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            start = time.perf_counter()
            trainer.train_iteration(step)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    views = cfg.pipeline.model.discriminator.num_views if hasattr(cfg.pipeline.model.discriminator, "num_views") else 1
    return {**setting, "views": views, "s_per_step": min(times), "images_per_s": setting["batch"] / min(times), "peak_mb": peak}


def _plot(rows: list, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    for ax, key, label in zip(axes, ("resolution", "samples", "batch"), ("neural resolution", "coarse = fine samples per ray", "batch (latents)")):
        sweep = [r for r in rows if r["sweep"] == key]
        ax.plot([r[key] for r in sweep], [r["s_per_step"] for r in sweep], marker="o")
        ax.set_xlabel(label)
        ax.set_ylabel("s / training step")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
    fig.suptitle("triplane-gan-tiny training step (D + G, 3 views per latent), one setting varied at a time")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--plot", type=Path, default=Path("docs/images/scaling.png"))
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(_measure(json.loads(args.one), args.steps, args.device)))
        return
    import torch

    print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"threads {torch.get_num_threads()}, device {args.device}")
    print("| varied | neural res | samples/ray | batch | R1 every step | s / step | images / s | peak MB |")
    print("| --- | ---: | ---: | ---: | --- | ---: | ---: | ---: |")
    rows = []
    for key, values in SWEEPS.items():
        for value in values:
            setting = {**BASE, key: value}
            cmd = [sys.executable, __file__, "--one", json.dumps(setting), "--steps", str(args.steps), "--device", args.device]
            out = subprocess.run(cmd, capture_output=True, text=True)
            if out.returncode != 0:
                print(f"| {key} = {value} | failed: {out.stderr.strip().splitlines()[-1][:80]} |||||||", flush=True)
                continue
            r = json.loads(out.stdout.strip().splitlines()[-1]) | {"sweep": key}
            rows.append(r)
            print(f"| {key} | {r['resolution']} | {2 * r['samples']} | {r['batch']} | {'yes' if r['r1'] else 'no'} "
                  f"| {r['s_per_step']:.2f} | {r['images_per_s']:.2f} | {r['peak_mb']:.0f} |", flush=True)
    _plot(rows, args.plot)
    print(f"\nplot: {args.plot}")


if __name__ == "__main__":
    main()
