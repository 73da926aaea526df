"""How box-like a run's objects are: their extents along the axes, face and body diagonals of the planes' frame.

    python benchmarks/shape_roundness.py RUN_DIR [RUN_DIR ...] [--per-class 4] [--threads 2]

For each object (the EMA generator's latent with truncation 1, or a true shape of the embedded classes), the
distance from the centre of its occupied 48³ lattice to the last point above the surface threshold (the one
``export-mesh`` uses) along the 6 axis, 12 face-diagonal and 8 body-diagonal directions.  Printed per class:
the mean extent along face diagonals and along body diagonals, each divided by the mean extent along the axes,
and the same for the horizontal plane alone (its 4 diagonals over the x and y axes: the cross-section of the
z-up cylinder and torus).  References: a sphere 1.00 / 1.00 / 1.00; the intersection of three cylinders around
the axes 1.00 / 1.22 / 1.00; ``|x|^p + |y|^p + |z|^p <= 1`` sqrt(2) 2^(-1/p) / sqrt(3) 3^(-1/p) / sqrt(2) 2^(-1/p)
(p = 3: 1.12 / 1.20 / 1.12); a cube 1.41 / 1.73 / 1.41.  A shape turned away from the axes moves towards 1, so
the ratios say how box-like *and* axis-aligned it is (the true shapes of the embedded data are axis-aligned, and
their row is printed first).
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import torch

from triplane_gan_ns.alignment import lattice_points
from triplane_gan_ns.data.shapes import CLASS_NAMES, random_shape
from triplane_gan_ns.runs import load_model
from triplane_gan_ns.surface import DEFAULT_THRESHOLD


def directions() -> Dict[str, torch.Tensor]:
    """Unit vectors towards the 6 faces, 12 edges and 8 corners of a cube centred at the origin, and those of
    them in the horizontal (z = 0) plane."""
    out: Dict[str, List[torch.Tensor]] = {"axis": [], "face": [], "body": [], "flat axis": [], "flat face": []}
    for v in itertools.product((-1.0, 0.0, 1.0), repeat=3):
        nonzero = sum(c != 0 for c in v)
        if nonzero:
            kind = ("axis", "face", "body")[nonzero - 1]
            out[kind].append(torch.tensor(v) / nonzero**0.5)
            if v[2] == 0:
                out[f"flat {kind}"].append(out[kind][-1])
    return {k: torch.stack(v) for k, v in out.items()}


def extent_ratios(
    inside: Callable[[torch.Tensor], torch.Tensor], bound: float
) -> Optional[Tuple[float, float, float]]:
    """(face-diagonal, body-diagonal) extent over the axis extent, and the horizontal diagonals' over the x and y
    axes', of the object where ``inside(points)`` holds; ``None`` when nothing is inside."""
    lattice = lattice_points(48, bound).reshape(-1, 3)
    occupied = inside(lattice)
    if not occupied.any():
        return None
    centre = lattice[occupied].mean(dim=0)
    steps = torch.linspace(0.0, 2.0 * bound, 801)
    extents = {}
    for name, dirs in directions().items():
        points = centre + steps[None, :, None] * dirs[:, None, :]  # [directions, steps, 3]
        hit = inside(points.reshape(-1, 3)).reshape(points.shape[:2])
        last = torch.where(hit, steps[None], torch.zeros(())).amax(dim=1)
        extents[name] = float(last.mean())
    if extents["axis"] == 0.0 or extents["flat axis"] == 0.0:
        return None
    return extents["face"] / extents["axis"], extents["body"] / extents["axis"], extents["flat face"] / extents["flat axis"]


def summarise(rows: List[Optional[Tuple[float, float, float]]]) -> str:
    kept = [r for r in rows if r is not None]
    if not kept:
        return "no surface"
    means = [sum(r[i] for r in kept) / len(kept) for i in range(3)]
    empty = f" ({len(rows) - len(kept)} empty)" if len(kept) < len(rows) else ""
    return " / ".join(f"{m:.2f}" for m in means) + empty


@torch.no_grad()
def run_rows(run_dir: Path, per_class: int, seed: int) -> Dict[str, str]:
    """Per class name: the ratios of ``per_class`` objects of the run's EMA generator."""
    if not (run_dir / "config.yml").is_file():
        raise SystemExit(f"{run_dir} has no config.yml; pass a run folder (outputs/<experiment>/<method>/<time>)")
    model, _ = load_model(run_dir / "config.yml")  # the latest checkpoint
    generator = model.generator_ema
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for label, name in enumerate(model.class_names):
        rows = []
        for _ in range(per_class):
            z = torch.randn(1, generator.backbone.z_dim, generator=gen)
            ws = generator.mapping(z, torch.tensor([label]), 1.0)
            density = generator.point_density(generator.fixed_planes(ws), DEFAULT_THRESHOLD)
            rows.append(extent_ratios(lambda p: density(p) > DEFAULT_THRESHOLD, generator.config.scene_bound))
        out[name] = summarise(rows)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="*", type=Path, help="run folders (each with config.yml and checkpoints)")
    parser.add_argument("--per-class", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(args.seed)
    truth = {}
    for label, name in enumerate(CLASS_NAMES):
        shapes = [random_shape(label, gen) for _ in range(args.per_class)]
        truth[name] = summarise([extent_ratios(lambda p, s=s: s.sdf(p) < 0, 1.0) for s in shapes])
    print("extent along face diagonals / along body diagonals, each over the extent along the axes / the same")
    print("ratio of face diagonals over axes in the horizontal plane alone")
    print(f"{'':<40}" + "".join(f"{name:>26}" for name in CLASS_NAMES))
    print(f"{'true shapes of the embedded classes':<40}" + "".join(f"{truth[n]:>26}" for n in CLASS_NAMES))
    for run in args.runs:
        rows = run_rows(run, args.per_class, args.seed)
        label = "/".join(run.parts[-3:])[-40:]
        print(f"{label:<40}" + "".join(f"{rows.get(n, '-'):>26}" for n in CLASS_NAMES))


if __name__ == "__main__":
    main()
