"""Training steps of a generator without super-resolution, decoding the RGB only (as ``render`` does) or every
feature channel (as before), alternating in one process.

Usage: python benchmarks/rgb_only.py [--rounds 8] [--steps 4]

The ``triplane-gan-tiny`` trainer at issue 10's 16 + 16 samples per ray (``presets.tiny_trainer``); each round
times ``--steps`` steps (one R1 step among every 4) with the full channels, then as many with the RGB rows only;
prints each round and the medians.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--steps", type=int, default=4)
    args = parser.parse_args()
    from presets import tiny_trainer

    trainer = tiny_trainer(samples_per_ray=16)
    gen = trainer.pipeline.model.generator
    rgb_only = gen.render_batched

    def all_channels(*a, **k):
        return rgb_only(*a, **{**k, "channels": None})

    step = 0
    for _ in range(3):
        trainer.train_iteration(step)
        step += 1
    times = {"all channels": [], "RGB only": []}
    for _ in range(args.rounds):
        for name, fn in (("all channels", all_channels), ("RGB only", rgb_only)):
            gen.render_batched = fn
            start = time.perf_counter()
            for _ in range(args.steps):
                trainer.train_iteration(step)
                step += 1
            times[name].append((time.perf_counter() - start) / args.steps)
    for name, values in times.items():
        rounds = " ".join(f"{t:.3f}" for t in values)
        print(f"{name}: median {statistics.median(values):.3f} s per step (rounds: {rounds})")
    print(f"speed-up {statistics.median(times['all channels']) / statistics.median(times['RGB only']):.2f}x")


if __name__ == "__main__":
    main()
