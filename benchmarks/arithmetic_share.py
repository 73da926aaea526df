"""How close a step is to its arithmetic: matrix-product and convolution FLOPs, the time torch spends in those
operations, and what the rest of the step costs.

Usage: python benchmarks/arithmetic_share.py [--parts tiny-step eg3d-shapes] [--threads 2] [--tiny-samples 16]

For each part, one profiled run after a warm-up:

* ``tiny-step``: one training step of the ``triplane-gan-tiny`` preset (D, G, R1 and the density regulariser at
  their intervals, EMA, data) on the embedded shapes, random initial weights, ``--tiny-samples`` coarse and
  importance samples per ray (16, issue 10's baseline; the preset now uses 8);
* ``eg3d-shapes``: the generator's forward + backward at EG3D's shapes (``eg3d_shapes.py``: batch 2, 3x32x256²
  planes, 32² rendering with 24+24 samples, SR to 128²).

Prints the FLOPs of matrix products and convolutions (``torch.utils.flop_counter``, forward and backward), the
machine's rate on a plain 2048² float32 matrix product, the time those FLOPs would take at that rate, the time
torch spent in the convolution / matrix-product kernels (profiler, self time) and their achieved rate, and the
whole step's time.  A step "near its arithmetic" spends most of its time in those kernels at about the plain
matrix product's rate.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

HEAVY = ("conv", "addmm", "aten::mm", "aten::bmm", "linear")
"""Profiler op names (substrings) counted as matrix-product / convolution kernels."""


def matmul_rate(repeats: int = 5) -> float:
    """FLOP/s of a 2048 x 2048 float32 matrix product (best of ``repeats``)."""
    import torch

    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * 2048**3 / best


def tiny_step(samples: int):
    """A callable running one training step of the tiny preset with ``samples`` coarse and importance samples per
    ray (after two warm-up steps)."""
    from presets import tiny_trainer

    trainer = tiny_trainer(samples_per_ray=samples)
    counter = iter(range(10**9))
    for _ in range(2):
        trainer.train_iteration(next(counter))
    return lambda: trainer.train_iteration(next(counter))


def eg3d_step():
    from eg3d_shapes import build_model, make_step

    return make_step(build_model("cpu"))


def count_flops(step) -> int:
    """FLOPs of the operations torch's flop counter knows (matrix products, convolutions, their backward) in one
    ``step()``, counted by a dispatch mode (``FlopCounterMode`` itself also tracks modules, which fails on
    custom autograd functions)."""
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils.flop_counter import flop_registry

    class Counter(TorchDispatchMode):
        total = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            out = func(*args, **kwargs)
            count = flop_registry.get(func._overloadpacket)
            if count is not None:  # the registry's formulas take the tensors and read their shapes
                Counter.total += count(*args, **kwargs, out_val=out)
            return out

    with Counter():
        step()
    return Counter.total


def measure(step, rate: float) -> dict:
    from torch.profiler import ProfilerActivity, profile

    step()  # warm-up
    counted = count_flops(step)
    start = time.perf_counter()
    step()
    seconds = time.perf_counter() - start
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    heavy = sum(
        e.self_cpu_time_total for e in prof.key_averages() if any(h in e.key for h in HEAVY)
    ) / 1e6
    total = sum(e.self_cpu_time_total for e in prof.key_averages()) / 1e6
    return {
        "flops": counted,
        "step_s": seconds,
        "at_matmul_rate_s": counted / rate,
        "heavy_s": heavy * seconds / total,  # profiler times rescaled to the unprofiled step
        "heavy_rate": counted / (heavy * seconds / total),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", nargs="+", default=["tiny-step", "eg3d-shapes"], choices=["tiny-step", "eg3d-shapes"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tiny-samples", type=int, default=16, help="coarse = importance samples per ray of tiny-step")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    rate = matmul_rate()
    print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, load {os.getloadavg()[0]:.2f}")
    print(f"plain 2048² matmul: {rate / 1e9:.0f} GFLOP/s")
    for part in args.parts:
        result = measure(tiny_step(args.tiny_samples) if part == "tiny-step" else eg3d_step(), rate)
        print(
            f"{part}: {result['flops'] / 1e9:.1f} GFLOP of matmul/conv, {result['at_matmul_rate_s']:.3f} s at the "
            f"matmul rate; step {result['step_s']:.3f} s ({result['step_s'] / result['at_matmul_rate_s']:.1f}x that); "
            f"in matmul/conv kernels {result['heavy_s']:.3f} s ({result['heavy_rate'] / 1e9:.0f} GFLOP/s), "
            f"everything else {result['step_s'] - result['heavy_s']:.3f} s"
        )


if __name__ == "__main__":
    main()
