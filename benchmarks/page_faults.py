"""A tiny training step with glibc's default allocator settings and with ``keep_freed_memory``, alternating.

Usage: python benchmarks/page_faults.py [--samples 16 16] [--rounds 3] [--steps 32]

Each measurement is its own process (allocator settings are per process): a ``triplane-gan-tiny`` trainer on the
embedded shapes with ``--samples`` coarse and importance samples per ray (16 16: issue 10's settings; 4 8: the
demo's), 4 warm-up steps, then the mean of ``--steps`` steps (R1 and density regulariser at their intervals),
with the minor page faults per step and the peak resident memory.  ``default`` switches the call off in the
trainer; ``kept`` is what the trainer does.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def measure(kept: bool, coarse: int, importance: int, steps: int) -> dict:
    sys.path.insert(0, str(HERE))
    import triplane_gan_ns.training.trainer as trainer_module

    if not kept:
        trainer_module.keep_freed_memory = lambda: False
    from presets import tiny_trainer

    trainer = tiny_trainer(samples_per_ray=importance)
    trainer.pipeline.model.generator.config.num_coarse_samples = coarse
    for step in range(4):
        trainer.train_iteration(step)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    start = time.perf_counter()
    for step in range(4, 4 + steps):
        trainer.train_iteration(step)
    seconds = (time.perf_counter() - start) / steps
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {"seconds": seconds, "faults": (usage.ru_minflt - faults) / steps, "peak_mb": usage.ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, nargs=2, default=(16, 16), metavar=("COARSE", "IMPORTANCE"))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--one", choices=("default", "kept"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    coarse, importance = args.samples
    if args.one:
        print(json.dumps(measure(args.one == "kept", coarse, importance, args.steps)))
        return
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    print(f"tiny step, {coarse} + {importance} samples per ray, mean of {args.steps} steps, one process each")
    print("| round | allocator | step (s) | page faults per step | peak MB |")
    print("| ---: | --- | ---: | ---: | ---: |")
    for round_ in range(1, args.rounds + 1):
        for mode in ("default", "kept"):
            cmd = [sys.executable, __file__, "--one", mode, "--samples", str(coarse), str(importance)]
            cmd += ["--steps", str(args.steps)]
            out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"| {round_} | {mode} | {r['seconds']:.3f} | {r['faults']:.0f} | {r['peak_mb']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
