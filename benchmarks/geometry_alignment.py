"""The aligned geometry measure on the embedded classes' true shapes: F-score@tau (and Chamfer distance) of each
class's true shape against itself under a random rotation (a different surface sample), against another
instance of its class, and against every other class; and the time of one alignment.

    python benchmarks/geometry_alignment.py [--threads 2] [--instances 3]

Rows are the rotated shape (the "generated" side), columns the true shape it is aligned to.  "self" is the
same shape; the class columns take the closest of ``--instances`` other instances of that class (as
``triplane-gan eval`` does).  These numbers bound what a generator can score and where class thresholds can sit.
"""

from __future__ import annotations

import argparse
import time

import torch

from triplane_gan_ns.data.shapes import CLASS_NAMES, random_shape
from triplane_gan_ns.alignment import AlignmentSettings, SurfaceShape, compare_shapes, random_rotations


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--instances", type=int, default=3, help="true shapes per class in the class columns")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    settings = AlignmentSettings(seed=args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    rows = {c: random_shape(i, gen) for i, c in enumerate(CLASS_NAMES)}
    truths = {c: [random_shape(i, gen) for _ in range(args.instances)] for i, c in enumerate(CLASS_NAMES)}
    rotations = random_rotations(len(CLASS_NAMES) + 1, seed=args.seed + 1)[1:]
    times = []
    header = f"{'rotated':>10} | {'self':>13} | " + " | ".join(f"{c:>13}" for c in CLASS_NAMES)
    print(f"F-score@{settings.tau} (Chamfer) after alignment, {args.threads} thread(s)")
    print(header)
    print("-" * len(header))
    for k, (name, shape) in enumerate(rows.items()):
        rotated = SurfaceShape.from_analytic(shape, seed=1000 + k).transformed(rotations[k])
        cells = []
        for candidates in [[shape]] + [truths[c] for c in CLASS_NAMES]:
            best = None
            for j, truth in enumerate(candidates):
                target = SurfaceShape.from_analytic(truth, seed=2000 + 10 * k + j)
                start = time.perf_counter()
                result = compare_shapes(rotated, target, settings)
                times.append(time.perf_counter() - start)
                best = result if best is None or result.chamfer < best.chamfer else best
            cells.append(f"{best.fscore:.3f} ({best.chamfer:.3f})")
        print(f"{name:>10} | " + " | ".join(f"{c:>13}" for c in cells))
    times.sort()
    print(f"alignment + scores: median {times[len(times) // 2]:.2f} s, max {times[-1]:.2f} s over {len(times)} pairs")


if __name__ == "__main__":
    main()
