"""Where a tiny training step's wall time goes, by the clock.

    python benchmarks/step_parts.py [--samples 16 | --preset] [--steps 15]

torch's profiler charges some operations of this step many times what they take (the triplane mean's backward:
57 ms against 2-3.5 ms timed in place), so this script times the parts themselves: it wraps the pipeline's,
generator's and field's functions and the decoder's forward and backward with ``time.perf_counter`` and prints
milliseconds per step (medians of the step, sums of the parts over ``--steps`` steps after 3 warm-up steps) for the
``triplane-gan-tiny`` preset with random initial weights, at 16 + 16 samples per ray (issue 10's settings) or, with
``--preset``, at the preset's own.
"""

from __future__ import annotations

import argparse
import collections
import copy
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from presets import setup_trainer, tiny_trainer  # noqa: E402

from triplane_gan_ns.allocator import keep_freed_memory  # noqa: E402
from triplane_gan_ns.fields import decoder  # noqa: E402
from triplane_gan_ns.method_configs.triplane_gan import triplane_gan_tiny  # noqa: E402

WARMUP = 3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=16, help="coarse and importance samples per ray")
    parser.add_argument("--preset", action="store_true", help="the preset's own samples per ray instead")
    parser.add_argument("--steps", type=int, default=15)
    args = parser.parse_args()
    keep_freed_memory()  # as the trainer does
    if args.preset:
        torch.manual_seed(0)
        trainer = setup_trainer(copy.deepcopy(triplane_gan_tiny.config))
    else:
        trainer = tiny_trainer(args.samples)
    pipeline = trainer.pipeline
    model = pipeline.gan_model
    parts: dict = collections.defaultdict(float)

    def timed(owner, name: str, label: str, by_grad: bool = False) -> None:
        inner = getattr(owner, name)

        def wrapper(*a, **k):
            start = time.perf_counter()
            out = inner(*a, **k)
            key = label + ((" (with gradients)" if torch.is_grad_enabled() else " (no gradients)") if by_grad else "")
            parts[key] += time.perf_counter() - start
            return out

        setattr(owner, name, staticmethod(wrapper) if isinstance(owner, type) else wrapper)

    timed(pipeline, "_generate", "generating fakes", by_grad=True)
    timed(model.generator, "planes", "  the backbone's planes")
    timed(model.generator.field, "batched_density", "  coarse passes' field (density only)")
    timed(model.generator.field, "batched", "  importance passes' field")
    timed(model.discriminator, "score_generated", "discriminator on the fakes")
    timed(decoder._ChunkedMLP, "forward", "decoder forwards (inside the fields above)")
    timed(decoder._ChunkedMLP, "_backward", "decoder backward (inside the backward above)")
    timed(trainer.optimizers, "optimizer_step", "optimiser steps")
    timed(pipeline, "after_step", "EMA and augmentation update")
    backward = torch.Tensor.backward
    calls = [0]

    def timed_backward(self, *a, **k):
        start = time.perf_counter()
        out = backward(self, *a, **k)
        parts[("backward of the discriminator phase", "backward of the generator phase")[calls[0] % 2]] += (
            time.perf_counter() - start
        )
        calls[0] += 1
        return out

    torch.Tensor.backward = timed_backward  # type: ignore[method-assign]
    for step in range(1, 1 + WARMUP):
        trainer.train_iteration(step)
    parts.clear()
    calls[0] = 0
    times = []
    for step in range(1 + WARMUP, 1 + WARMUP + args.steps):
        start = time.perf_counter()
        trainer.train_iteration(step)
        times.append(time.perf_counter() - start)
    generator = trainer.config.pipeline.model.generator
    print(f"triplane-gan-tiny, {generator.num_coarse_samples} + {generator.num_importance_samples} samples per ray, "
          f"{torch.get_num_threads()} threads: median step {statistics.median(times) * 1e3:.0f} ms")
    print("| part | ms per step |")
    print("| --- | ---: |")
    order = [
        "generating fakes (no gradients)",
        "generating fakes (with gradients)",
        "  the backbone's planes",
        "  coarse passes' field (density only)",
        "  importance passes' field",
        "decoder forwards (inside the fields above)",
        "discriminator on the fakes",
        "backward of the discriminator phase",
        "backward of the generator phase",
        "decoder backward (inside the backward above)",
        "optimiser steps",
        "EMA and augmentation update",
    ]
    for key in order + [k for k in parts if k not in order]:
        if key in parts:
            print(f"| {key} | {parts[key] / args.steps * 1e3:.1f} |")


if __name__ == "__main__":
    main()
