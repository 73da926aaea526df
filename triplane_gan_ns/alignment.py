"""Pose-free comparison of generated objects with true shapes: alignment, Chamfer distance, F-score, IoU, and
whether each object is closer to its own class's true shape than to any other class's.

Used by ``triplane-gan eval`` (``--metrics geometry`` on data with known shapes) and logged during training on
such data; it depends only on the generator, the data's shapes and ``surface.py``.

A generator trained without poses picks its own canonical frame, position and size, so a generated object is
compared with a true shape only after both are brought to one frame:

1. **Centre and scale.**  Each shape is a set of area-uniform surface points (a generated object: the
   marching-cubes surface of its density lattice at a fixed level, 10 by default, as ``export-mesh
   --density-threshold`` makes it).  It is translated to its surface centroid and divided by its RMS surface radius (the RMS distance of
   the surface from the centroid).  RMS rather than the bounding sphere: one floater moves a bounding sphere
   a lot, the RMS radius little.  Meshes use their exact area-weighted moments; analytic shapes the moments
   of 65 536 samples (a centroid off by 1% of the radius already costs a thin torus ~7% IoU).  All distances
   below are in units of the RMS radius.
2. **Rotation.**  A coarse search tries ``num_rotations`` rotations uniform on SO(3) (normalised Gaussian
   quaternions from a fixed seed, the identity first) on 192 points per shape, scored by the symmetric
   Chamfer distance, all rotations of a batch in one batched product.  The best four are refined by
   point-to-point ICP (nearest neighbours both ways, Kabsch by SVD with the determinant fixed to +1, rotation
   only: centre and scale are settled) and then by a symmetric point-to-plane Gauss-Newton (normals from the
   16 nearest surface points), which converges where ICP slides slowly (a turn about a torus's axis
   constrained only by a small bump).  The candidate with the smallest distance wins.  Reflections are never
   allowed; a shape's symmetries make several rotations equally good, and any of them is fine.
3. **Scores of the aligned pair.**  Symmetric Chamfer distance: the mean of the mean nearest-neighbour
   distance from 2048 generated points to all 8192 true points and from 2048 true points to all 8192
   generated ones.  F-score@tau (tau = 0.05 RMS radii): precision = fraction of those generated points
   within tau of the truth, recall = fraction of those true points within tau of the generated surface,
   F = 2PR / (P + R).  IoU: both inside tests (the analytic shape / mesh; the generated trilinear density
   above the threshold) on one 32^3 lattice of the true shape's normalised frame spanning both shapes, the
   generated one through the rotation.  Sampling sets a floor: two independent samples of one surface are
   ~sqrt(area / 8192) / 2 ~ 0.02 apart (Chamfer), and F-score stays above 0.98 for every embedded class.
4. **Class-correct.**  A generated object of class c is compared with each of a few true shapes of every
   class (the closest instance of each class counts, since a generated object is a new instance); it is
   class-correct when its aligned Chamfer distance to class c is smaller than to every other class.  A class
   counts as class-correct when more than half of its objects are.

Everything is torch on the CPU, batched, and deterministic given the seed (``AlignmentSettings``).
``aligned_geometry_scores`` is the entry point for a generator (``triplane-gan eval`` and training logs).
"""


from __future__ import annotations

import json
import math

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
import trimesh
from jaxtyping import Bool, Float, Float32, Int
from torch import Tensor

from triplane_gan_ns.data.shapes import Shape
from triplane_gan_ns.generator import TriplaneGenerator
from triplane_gan_ns.surface import DEFAULT_THRESHOLD, density_grid, mesh_from_grid


def occupancy_iou(a: Bool[Tensor, "*grid"], b: Bool[Tensor, "*grid"]) -> float:
    """Intersection over union of two occupancy grids (1 when both are empty)."""
    union = int((a | b).sum())
    return 1.0 if union == 0 else int((a & b).sum()) / union


def lattice_points(resolution: int, bound: float) -> Float[Tensor, "res res res 3"]:
    """The ``resolution^3`` lattice over ``[-bound, bound]^3``, indexed ``[x, y, z]`` like ``density_grid``."""
    axis = torch.linspace(-bound, bound, resolution, dtype=torch.float64).float()
    return torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), dim=-1)


# ---- nearest neighbours ---------------------------------------------------------------------------------------
def _squared_distances(a: Float[Tensor, "*b n 3"], b: Float[Tensor, "*b m 3"]) -> Float[Tensor, "*b n m"]:
    """|a_i - b_j|^2 through one matrix product (fast; off by ~1e-7 relative near zero, fine for ranking)."""
    d2 = (a @ b.transpose(-1, -2)).mul_(-2)
    return d2.add_((a * a).sum(-1)[..., :, None]).add_((b * b).sum(-1)[..., None, :]).clamp_(min=0)


def nearest_distances(
    query: Float[Tensor, "q 3"], reference: Float[Tensor, "m 3"], chunk: int = 1 << 20
) -> Float[Tensor, "q"]:
    """Distance from every query point to its nearest reference point (exact: the neighbour is found through
    a matrix product, its distance recomputed from the coordinates).  ``chunk`` bounds the distance matrix."""
    rows = max(1, chunk // max(1, reference.shape[0]))
    out = []
    for i in range(0, query.shape[0], rows):
        part = query[i : i + rows]
        index = _squared_distances(part, reference).argmin(dim=-1)
        out.append((part - reference[index]).norm(dim=-1))
    return torch.cat(out) if out else query.new_zeros(0)


def chamfer_distance(a: Float[Tensor, "n 3"], b: Float[Tensor, "m 3"]) -> float:
    """Symmetric Chamfer distance: the mean of (mean distance from each point of a to b) and (b to a)."""
    a, b = a.float(), b.float()
    return float((nearest_distances(a, b).mean() + nearest_distances(b, a).mean()) / 2)


def fscore(generated: Float[Tensor, "n 3"], truth: Float[Tensor, "m 3"], tau: float) -> tuple[float, float, float]:
    """(F-score, precision, recall) at distance ``tau``: precision is the fraction of generated points within
    ``tau`` of a true point, recall the fraction of true points within ``tau`` of a generated point, F their
    harmonic mean (0 when both are 0)."""
    generated, truth = generated.float(), truth.float()
    return _fscore(nearest_distances(generated, truth), nearest_distances(truth, generated), tau)


def _fscore(to_truth: Float[Tensor, "n"], to_generated: Float[Tensor, "m"], tau: float) -> tuple[float, float, float]:
    precision, recall = float((to_truth < tau).float().mean()), float((to_generated < tau).float().mean())
    return (0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)), precision, recall


# ---- shapes for the aligned comparison --------------------------------------------------------------------------
InsideFn = Callable[[Float[Tensor, "k 3"]], Bool[Tensor, "k"]]
"""World points -> whether each lies inside the shape."""


def surface_moments(points: Float[Tensor, "n 3"]) -> tuple[Float[Tensor, "3"], float]:
    """Centroid and RMS distance from it of area-uniform surface samples."""
    points = points.double()
    centre = points.mean(dim=0)
    return centre.float(), float((points - centre).pow(2).sum(-1).mean().sqrt())


def mesh_moments(mesh: trimesh.Trimesh) -> tuple[Float[Tensor, "3"], float]:
    """Exact centroid and RMS distance from it of the surface of a triangle mesh (area-weighted).

    Over a triangle with vertices a, b, c: E[p] = (a + b + c) / 3 and E[|p|^2] = (|a|^2 + |b|^2 + |c|^2 +
    |a + b + c|^2) / 12."""
    tris = torch.tensor(np.asarray(mesh.triangles), dtype=torch.float64)
    area = torch.tensor(np.asarray(mesh.area_faces), dtype=torch.float64)
    weight = area / area.sum()
    total = tris.sum(dim=1)
    centre = (weight[:, None] * total / 3).sum(dim=0)
    second = (weight * (tris.pow(2).sum(dim=(1, 2)) + total.pow(2).sum(-1)) / 12).sum()
    return centre.float(), float((second - centre.pow(2).sum()).clamp(min=0).sqrt())


@dataclass
class SurfaceShape:
    """A shape for the aligned comparison, in world units: points on its surface (uniform in area, random
    order), an inside test, and the centre (surface centroid) and scale (RMS distance of the surface from the
    centroid) that normalise it.  Both moments default to those of ``surface``; the constructors below pass
    less noisy ones (exact for meshes, from many more samples for analytic shapes)."""

    surface: Float[Tensor, "n 3"]
    inside: InsideFn
    centre: Optional[Float[Tensor, "3"]] = None
    scale: Optional[float] = None

    def __post_init__(self) -> None:
        self.surface = self.surface.float()
        if self.surface.ndim != 2 or self.surface.shape[-1] != 3 or self.surface.shape[0] == 0:
            raise ValueError(f"a surface needs [n > 0, 3] points, got {tuple(self.surface.shape)}")
        if self.centre is None or self.scale is None:
            self.centre, self.scale = surface_moments(self.surface)
        self.centre, self.scale = self.centre.float(), max(float(self.scale), 1e-12)
        self.normalised = (self.surface - self.centre) / self.scale
        self._references: Dict[tuple, tuple] = {}

    def reference(self, count: int, neighbours: int = 16) -> tuple[Float[Tensor, "k 3"], Float[Tensor, "k 3"]]:
        """The first ``count`` normalised surface points and their normals (from all points), computed once."""
        key = (count, neighbours)
        if key not in self._references:
            points = self.normalised[:count]
            self._references[key] = (points, estimate_normals(points, self.normalised, neighbours))
        return self._references[key]

    def world(self, points: Float[Tensor, "*bs 3"]) -> Float[Tensor, "*bs 3"]:
        """Normalised coordinates to world coordinates."""
        return points * self.scale + self.centre

    @classmethod
    def from_analytic(
        cls, shape: Shape, num_points: int = 8192, seed: int = 0, moment_points: int = 1 << 16
    ) -> "SurfaceShape":
        """An analytic shape of the embedded data (``Shape.sample_surface``, ``Shape.occupancy``); the moments
        from ``moment_points`` samples (the first ``num_points`` of them are the surface)."""
        points = shape.sample_surface(max(num_points, moment_points), generator=torch.Generator().manual_seed(seed))
        return cls(points[:num_points], shape.occupancy, *surface_moments(points))

    @classmethod
    def from_mesh(cls, mesh: trimesh.Trimesh, num_points: int = 8192, seed: int = 0) -> "SurfaceShape":
        """A triangle mesh in world coordinates: area-uniform samples, exact moments; inside by ray parity
        (watertight meshes) or winding number."""
        from triplane_gan_ns.data.meshes import mesh_occupancy

        surface = torch.from_numpy(np.asarray(mesh.sample(num_points, seed=seed))).float()
        return cls(surface, lambda points: mesh_occupancy(mesh, None, points), *mesh_moments(mesh))

    @classmethod
    def from_density_grid(
        cls,
        grid: Float32[np.ndarray, "res res res"],
        bound: float,
        threshold: float,
        num_points: int = 8192,
        seed: int = 0,
    ) -> Optional["SurfaceShape"]:
        """The surface ``density = threshold`` of a density lattice (``surface.density_grid``: indexed
        ``[x, y, z]`` over ``[-bound, bound]^3``, both faces included) by marching cubes, as the mesh exporter
        makes it; inside = trilinear density above the threshold.  ``None`` when the density never exceeds
        the threshold (no surface)."""
        if not float(grid.max()) > threshold:
            return None
        mesh = mesh_from_grid(grid, bound, threshold, None, keep_components=0)
        surface = torch.from_numpy(np.asarray(mesh.sample(num_points, seed=seed))).float()
        density = torch.from_numpy(np.ascontiguousarray(grid, dtype=np.float32))[None, None]

        def inside(points: Float[Tensor, "k 3"]) -> Bool[Tensor, "k"]:
            # grid_sample reads (x, y, z) as (W, H, D); the lattice is indexed [x, y, z] = [D, H, W]
            where = (points.float().flip(-1) / bound).reshape(1, 1, 1, -1, 3)
            value = F.grid_sample(density, where, mode="bilinear", padding_mode="zeros", align_corners=True)
            return value.reshape(points.shape[:-1]) > threshold

        return cls(surface, inside, *mesh_moments(mesh))

    def transformed(
        self, rotation: Float[Tensor, "3 3"], scale: float = 1.0, shift: Optional[Float[Tensor, "3"]] = None
    ) -> "SurfaceShape":
        """The shape moved by ``p -> scale * rotation @ p + shift`` (surface, inside test and moments)."""
        shift = torch.zeros(3) if shift is None else shift.float()
        rotation = rotation.float()
        original = self.inside
        return SurfaceShape(
            scale * self.surface @ rotation.T + shift,
            lambda points: original(((points.float() - shift) / scale) @ rotation),
            scale * rotation @ self.centre + shift,
            scale * self.scale,
        )


# ---- rotation search ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AlignmentSettings:
    """How a generated shape is aligned to a true one and scored; the defaults are those of ``triplane-gan eval``."""

    num_rotations: int = 4096
    """Random rotations (uniform on SO(3), the identity first) tried by the coarse search."""
    coarse_points: int = 192
    """Points per shape in the coarse search."""
    num_candidates: int = 4
    """Best rotations of the coarse search refined."""
    icp_points: int = 512
    """Points per shape in the refinement (matched against ``reference_points`` in its second stage)."""
    icp_iterations: int = 10
    """Point-to-point ICP iterations (nearest neighbours both ways, then Kabsch)."""
    plane_iterations: int = 8
    """Point-to-plane Gauss-Newton iterations after ICP."""
    reference_points: int = 2048
    """Points per shape, with normals, that the point-to-plane stage matches against."""
    normal_neighbours: int = 16
    """Nearest surface points whose covariance gives a point's normal."""
    query_points: int = 2048
    """Points per shape whose distances enter Chamfer and F-score (against every point of the other shape)."""
    tau: float = 0.05
    """F-score distance, in units of the RMS radius."""
    iou_resolution: int = 32
    """Lattice points per axis of the IoU."""
    seed: int = 0
    """Seed of the rotations and the subsets."""
    batch: int = 64
    """Rotations per batch of the coarse search (memory: batch x coarse_points^2 floats)."""


def quaternion_matrices(quaternions: Float[Tensor, "n 4"]) -> Float[Tensor, "n 3 3"]:
    """Rotation matrices of (w, x, y, z) quaternions (normalised first)."""
    w, x, y, z = (quaternions / quaternions.norm(dim=-1, keepdim=True)).unbind(-1)
    return torch.stack(
        [
            1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
            2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
            2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
        ],
        dim=-1,
    ).reshape(-1, 3, 3)


def random_rotations(num: int, seed: int = 0) -> Float[Tensor, "num 3 3"]:
    """``num`` rotations uniform on SO(3) (normalised 4D Gaussians are uniform unit quaternions); the first
    is the identity, so shapes that are already aligned keep their frame."""
    q = torch.randn(num, 4, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    q[0] = torch.tensor([1.0, 0.0, 0.0, 0.0])
    return quaternion_matrices(q).float()


def kabsch(source: Float[Tensor, "k n 3"], target: Float[Tensor, "k n 3"]) -> Float[Tensor, "k 3 3"]:
    """The proper rotations (det +1) minimising ``sum |R source_i - target_i|^2`` about the origin, per batch."""
    h = source.transpose(-1, -2) @ target  # sum_i s_i t_i^T
    u, _, vh = torch.linalg.svd(h.double())
    v = vh.transpose(-1, -2)
    sign = torch.sign(torch.linalg.det(v @ u.transpose(-1, -2)))
    sign = torch.where(sign == 0, torch.ones_like(sign), sign)
    d = torch.diag_embed(torch.stack([torch.ones_like(sign), torch.ones_like(sign), sign], dim=-1))
    return (v @ d @ u.transpose(-1, -2)).float()


def _subset(points: Float[Tensor, "n 3"], num: int, generator: torch.Generator) -> Float[Tensor, "k 3"]:
    if points.shape[0] <= num:
        return points
    return points[torch.randperm(points.shape[0], generator=generator)[:num]]


def _symmetric_cost(d2: Float[Tensor, "*b n m"]) -> Float[Tensor, "*b"]:
    """Symmetric Chamfer distance from squared distances."""
    return (d2.amin(dim=-1).sqrt().mean(-1) + d2.amin(dim=-2).sqrt().mean(-1)) / 2


def coarse_costs(
    source: Float[Tensor, "n 3"], target: Float[Tensor, "m 3"], rotations: Float[Tensor, "r 3 3"], batch: int = 64
) -> Float[Tensor, "r"]:
    """Symmetric Chamfer distance between ``R source`` and ``target`` for every rotation, in batches: one
    batched product per batch (|Rs|^2 = |s|^2, so the squared norms are shared by all rotations)."""
    norms = (source * source).sum(-1)[:, None] + (target * target).sum(-1)[None, :]  # [n, m]
    rotated = source @ rotations.transpose(-1, -2)  # [r, n, 3]
    across = -2 * target.T
    near_source, near_target = [], []
    for i in range(0, rotations.shape[0], batch):
        part = rotated[i : i + batch]
        d2 = torch.baddbmm(norms.expand(part.shape[0], -1, -1), part, across.expand(part.shape[0], -1, -1))
        near_source.append(d2.amin(dim=-1))
        near_target.append(d2.amin(dim=-2))
    return (torch.cat(near_source).clamp(min=0).sqrt().mean(-1) + torch.cat(near_target).clamp(min=0).sqrt().mean(-1)) / 2


def icp_rotations(
    source: Float[Tensor, "n 3"], target: Float[Tensor, "m 3"], initial: Float[Tensor, "k 3 3"], iterations: int
) -> tuple[Float[Tensor, "k 3 3"], Float[Tensor, "k"]]:
    """Rotation-only ICP from each initial rotation: match every rotated source point to its nearest target
    point and every target point to its nearest rotated source point, solve Kabsch on both sets of pairs,
    repeat.  Returns the rotations and their final symmetric Chamfer distances."""
    k = initial.shape[0]
    rotations = initial
    for _ in range(iterations + 1):
        d2 = _squared_distances(source @ rotations.transpose(-1, -2), target)  # [k, n, m]
        cost = _symmetric_cost(d2)
        if _ == iterations:
            break
        to_target = target[d2.argmin(dim=-1)]  # [k, n, 3]: partner of each source point
        to_source = source[d2.argmin(dim=-2)]  # [k, m, 3]: partner of each target point
        pairs_source = torch.cat([source.expand(k, -1, -1), to_source], dim=1)
        pairs_target = torch.cat([to_target, target.expand(k, -1, -1)], dim=1)
        rotations = kabsch(pairs_source, pairs_target)
    return rotations, cost


def axis_angle_matrices(vectors: Float[Tensor, "k 3"]) -> Float[Tensor, "k 3 3"]:
    """Rotations by ``|v|`` radians about ``v``."""
    angle = vectors.norm(dim=-1, keepdim=True)
    axis = vectors / angle.clamp(min=1e-12)
    return quaternion_matrices(torch.cat([(angle / 2).cos(), (angle / 2).sin() * axis], dim=-1))


def _nearest_index(
    query: Float[Tensor, "*b n 3"], reference: Float[Tensor, "*b m 3"], chunk: int = 1 << 20
) -> Int[Tensor, "*b n"]:
    rows = max(1, chunk // reference.shape[-2])
    starts = range(0, query.shape[-2], rows)
    parts = [_squared_distances(query[..., i : i + rows, :], reference).argmin(dim=-1) for i in starts]
    return torch.cat(parts, dim=-1)


def estimate_normals(
    points: Float[Tensor, "n 3"], surface: Float[Tensor, "m 3"], neighbours: int = 16, chunk: int = 1 << 20
) -> Float[Tensor, "n 3"]:
    """Unit normals (unoriented) of ``points`` on the sampled ``surface``: the direction of least spread of their
    ``neighbours`` nearest surface points."""
    rows = max(1, chunk // surface.shape[0])
    out = []
    for i in range(0, points.shape[0], rows):
        d2 = _squared_distances(points[i : i + rows], surface)
        index = d2.topk(min(neighbours, surface.shape[0]), largest=False).indices
        near = surface[index] - surface[index].mean(dim=1, keepdim=True)
        out.append(torch.linalg.eigh((near.transpose(-1, -2) @ near).double())[1][..., 0].float())
    return torch.cat(out) if out else points.new_zeros(0, 3)


def plane_refine(
    source: Float[Tensor, "n 3"],
    source_reference: tuple[Float[Tensor, "p 3"], Float[Tensor, "p 3"]],
    target: Float[Tensor, "m 3"],
    target_reference: tuple[Float[Tensor, "q 3"], Float[Tensor, "q 3"]],
    initial: Float[Tensor, "k 3 3"],
    iterations: int,
) -> tuple[Float[Tensor, "k 3 3"], Float[Tensor, "k"]]:
    """Symmetric point-to-plane refinement of rotations: each rotated source point is matched to its nearest
    target reference point and each target point to its nearest rotated source reference point; a Gauss-Newton
    step on the distances along the partners' normals gives a small rotation ``exp(w)`` that multiplies the
    current one (so it stays proper).  Point-to-point ICP slides slowly along directions a shape barely
    constrains (the turn of a torus with a bump); this converges in a few steps.  Returns the rotations and
    their symmetric Chamfer distances (points against the other shape's reference points) after the last step."""
    (source_points, source_normals), (target_points, target_normals) = source_reference, target_reference
    k = initial.shape[0]
    batch = torch.arange(k)[:, None]
    rotations = initial
    for step in range(iterations + 1):
        moved = source @ rotations.transpose(-1, -2)  # [k, n, 3]
        partner = _nearest_index(moved, target_points)
        ahead, ahead_normal = target_points[partner], target_normals[partner]
        moved_points = source_points @ rotations.transpose(-1, -2)  # [k, p, 3]
        back = _nearest_index(target.expand(k, -1, -1), moved_points)
        behind, behind_normal = moved_points[batch, back], (source_normals @ rotations.transpose(-1, -2))[batch, back]
        if step == iterations:
            cost = ((moved - ahead).norm(dim=-1).mean(-1) + (behind - target).norm(dim=-1).mean(-1)) / 2
            return rotations, cost
        residual = torch.cat([((moved - ahead) * ahead_normal).sum(-1), ((behind - target) * behind_normal).sum(-1)], dim=1)
        jacobian = torch.cat(
            [torch.linalg.cross(moved, ahead_normal), torch.linalg.cross(target.expand(k, -1, -1), behind_normal)], dim=1
        ).double()
        normal_matrix = jacobian.transpose(-1, -2) @ jacobian + 1e-6 * torch.eye(3, dtype=torch.float64)
        step_vector = -torch.linalg.solve(normal_matrix, (jacobian.transpose(-1, -2) @ residual.double()[..., None])[..., 0])
        rotations = axis_angle_matrices(step_vector.float()) @ rotations
    raise AssertionError("unreachable")


def align_rotation(
    source: "SurfaceShape", target: "SurfaceShape", settings: AlignmentSettings = AlignmentSettings()
) -> tuple[Float[Tensor, "3 3"], float]:
    """The rotation ``R`` that best maps the normalised ``source`` onto the normalised ``target`` (``R source``
    ~ ``target``), and its symmetric Chamfer distance (refinement points against reference points).

    1. Coarse: the symmetric Chamfer distance of ``coarse_points`` points per shape under each of
       ``num_rotations`` random rotations; the best ``num_candidates`` go on.
    2. Point-to-point ICP (nearest neighbours both ways, Kabsch) on ``icp_points`` points per shape.
    3. Point-to-plane Gauss-Newton against ``reference_points`` points with normals per shape.
    The candidate with the smallest final distance wins.  Deterministic given ``settings.seed``."""
    gen = torch.Generator().manual_seed(settings.seed)
    rotations = random_rotations(settings.num_rotations, settings.seed)
    a, b = source.normalised, target.normalised
    coarse_a, coarse_b = _subset(a, settings.coarse_points, gen), _subset(b, settings.coarse_points, gen)
    costs = coarse_costs(coarse_a, coarse_b, rotations, settings.batch)
    best = costs.topk(min(settings.num_candidates, costs.shape[0]), largest=False).indices
    fine_a, fine_b = _subset(a, settings.icp_points, gen), _subset(b, settings.icp_points, gen)
    refined, _ = icp_rotations(fine_a, fine_b, rotations[best], settings.icp_iterations)
    count, neighbours = settings.reference_points, settings.normal_neighbours
    source_ref, target_ref = source.reference(count, neighbours), target.reference(count, neighbours)
    refined, cost = plane_refine(fine_a, source_ref, fine_b, target_ref, refined, settings.plane_iterations)
    i = int(cost.argmin())
    return refined[i], float(cost[i])


@dataclass
class Comparison:
    """Scores of a generated shape aligned to a true shape: distances in units of each shape's RMS radius."""

    chamfer: float
    fscore: float
    precision: float
    recall: float
    iou: float
    rotation: Float[Tensor, "3 3"]
    """Maps the generated shape's normalised coordinates to the true shape's."""


def compare_shapes(
    generated: SurfaceShape, truth: SurfaceShape, settings: AlignmentSettings = AlignmentSettings()
) -> Comparison:
    """Align ``generated`` to ``truth`` (centroid, RMS radius, rotation) and score the aligned pair: symmetric
    Chamfer distance, F-score at ``settings.tau`` and IoU of the two occupancies on one lattice."""
    rotation, _ = align_rotation(generated, truth, settings)
    aligned = generated.normalised @ rotation.T
    q = settings.query_points
    to_truth = nearest_distances(aligned[:q], truth.normalised)
    to_generated = nearest_distances(truth.normalised[:q], aligned)
    chamfer = float((to_truth.mean() + to_generated.mean()) / 2)
    f, precision, recall = _fscore(to_truth, to_generated, settings.tau)
    # IoU on a lattice of the true shape's normalised frame that holds both surfaces
    extent = 1.05 * float(torch.cat([aligned, truth.normalised]).norm(dim=-1).max())
    lattice = lattice_points(settings.iou_resolution, extent).reshape(-1, 3)
    true_inside = truth.inside(truth.world(lattice))
    generated_inside = generated.inside(generated.world(lattice @ rotation))  # R^T q, row-wise
    return Comparison(chamfer, f, precision, recall, occupancy_iou(generated_inside, true_inside), rotation)


# ---- against classes of true shapes ---------------------------------------------------------------------------
TrueShape = Union[Shape, SurfaceShape]
"""A true shape: an analytic ``Shape`` (sampled when needed) or a ready ``SurfaceShape``."""


def known_shapes(image_filenames: Sequence[Path], labels: Sequence[int], per_class: int = 3) -> Dict[int, List[TrueShape]]:
    """True shapes by class index of renders in the SRN layout with ``shape.json`` next to each object's views
    (``<object>/rgb/<view>.png``): analytic shapes (the embedded data) or normalised meshes (``data.meshes``);
    the first ``per_class`` objects of each class.  Empty for data without them."""
    from triplane_gan_ns.data.embedded import load_shape
    from triplane_gan_ns.data.meshes import load_object_mesh

    shapes: Dict[int, Dict[Path, TrueShape]] = {}
    for path, label in zip(image_filenames, labels):
        object_dir = Path(path).parent.parent
        found = shapes.setdefault(int(label), {})
        if object_dir in found or len(found) >= per_class or not (object_dir / "shape.json").is_file():
            continue
        if json.loads((object_dir / "shape.json").read_text()).get("kind") == "mesh":
            found[object_dir] = SurfaceShape.from_mesh(load_object_mesh(object_dir)[0])
        else:
            found[object_dir] = load_shape(object_dir)
    return {label: list(found.values()) for label, found in shapes.items() if found}


def as_surface_shape(shape: TrueShape, num_points: int = 8192, seed: int = 0) -> SurfaceShape:
    return shape if isinstance(shape, SurfaceShape) else SurfaceShape.from_analytic(shape, num_points, seed)


def compare_with_classes(
    generated: SurfaceShape,
    class_truths: Mapping[int, Sequence[SurfaceShape]],
    settings: AlignmentSettings = AlignmentSettings(),
) -> Dict[int, Comparison]:
    """For every class, the comparison of ``generated`` with the class's closest true shape (smallest aligned
    Chamfer distance): the class's instances vary in size and proportions, a generated object is a new one."""
    best: Dict[int, Comparison] = {}
    for label, truths in class_truths.items():
        for truth in truths:
            comparison = compare_shapes(generated, truth, settings)
            if label not in best or comparison.chamfer < best[label].chamfer:
                best[label] = comparison
    return best


def is_class_correct(label: int, by_class: Mapping[int, Comparison]) -> bool:
    """A generated object of class ``label`` is class-correct when its aligned Chamfer distance to its own class's
    closest true shape is smaller than to every other class's (an object without surface never is)."""
    if label not in by_class:
        return False
    return all(by_class[label].chamfer < other.chamfer for c, other in by_class.items() if c != label)


def summarise_classes(
    labels: Sequence[int],
    comparisons: Sequence[Optional[Mapping[int, Comparison]]],
    class_names: Optional[Sequence[str]] = None,
) -> Dict[str, float]:
    """Per-class and mean scores of generated objects (``comparisons[i]``: object i of class ``labels[i]`` against
    every class, ``None`` when it has no surface).

    ``shape_chamfer``, ``shape_fscore``, ``shape_iou``: against the object's own class, averaged per class,
    then over classes (``/<class>`` per class).  Objects without surface score F-score and IoU 0 and have no
    Chamfer distance.  ``shape_class_correct_fraction/<class>``: the fraction of a class's objects that are
    class-correct; ``shape_class_correct``: the classes where more than half are, of ``shape_num_classes``;
    ``shape_empty_fraction``: objects without surface."""

    def name(label: int) -> str:
        return class_names[label] if class_names is not None else str(label)

    per_class: Dict[int, Dict[str, list]] = {}
    for label, by_class in zip(labels, comparisons):
        rows = per_class.setdefault(int(label), {"chamfer": [], "fscore": [], "iou": [], "correct": []})
        own = by_class.get(int(label)) if by_class is not None else None
        rows["fscore"].append(own.fscore if own is not None else 0.0)
        rows["iou"].append(own.iou if own is not None else 0.0)
        if own is not None:
            rows["chamfer"].append(own.chamfer)
        rows["correct"].append(by_class is not None and is_class_correct(int(label), by_class))
    if not per_class:
        return {}

    def mean(values: Sequence[float]) -> float:
        return sum(values) / len(values) if values else float("nan")

    out: Dict[str, float] = {}
    for key in ("chamfer", "fscore", "iou"):
        values = {label: mean(rows[key]) for label, rows in sorted(per_class.items())}
        finite = [v for v in values.values() if math.isfinite(v)]
        out[f"shape_{key}"] = mean(finite)
        out.update({f"shape_{key}/{name(label)}": v for label, v in values.items()})
    fractions = {label: mean([float(c) for c in rows["correct"]]) for label, rows in sorted(per_class.items())}
    out.update({f"shape_class_correct_fraction/{name(label)}": v for label, v in fractions.items()})
    out["shape_class_correct"] = float(sum(v > 0.5 for v in fractions.values()))
    out["shape_num_classes"] = float(len(per_class))
    out["shape_empty_fraction"] = sum(c is None for c in comparisons) / len(comparisons)
    return out


@torch.no_grad()
def generated_shape(
    generator: TriplaneGenerator,
    ws: Float[Tensor, "1 num_ws w_dim"],
    resolution: int,
    threshold: float,
    num_points: int = 8192,
    seed: int = 0,
) -> Optional[SurfaceShape]:
    """The object of one latent as the mesh exporter sees it: density on a ``resolution``^3 lattice over the
    scene box, its ``threshold`` surface (``None`` when the density never exceeds it)."""
    bound = generator.config.scene_bound
    density = generator.point_density(generator.fixed_planes(ws), threshold)
    grid = density_grid(density, resolution, bound, device=ws.device)
    return SurfaceShape.from_density_grid(grid, bound, threshold, num_points, seed)


def aligned_geometry_scores(
    generator: TriplaneGenerator,
    class_shapes: Mapping[int, Sequence[TrueShape]],
    ws: Optional[Float[Tensor, "n num_ws w_dim"]] = None,
    labels: Optional[Int[Tensor, "n"]] = None,
    num_per_class: int = 2,
    truncation: float = 1.0,
    resolution: int = 64,
    threshold: Optional[float] = None,
    class_names: Optional[Sequence[str]] = None,
    settings: AlignmentSettings = AlignmentSettings(),
    seed: int = 0,
    details: Optional[Dict[str, object]] = None,
) -> Dict[str, float]:
    """Aligned geometry of a generator against true shapes per class (``summarise_classes``' keys).

    ``class_shapes``: class index -> true shapes (analytic ``Shape``s or ``SurfaceShape``s).  Latents are
    ``ws`` with their ``labels``, or else ``num_per_class`` per class with a true shape, drawn from ``seed``
    and mapped with ``truncation``.  Each object is meshed like ``export-mesh`` (``resolution``,
    ``threshold``: ``surface.DEFAULT_THRESHOLD``, 10, when ``None``) and compared with every true
    shape of every class.  ``details``, when given, receives ``fscore_matrix`` (generated class -> true
    class -> mean F-score, over objects with a surface) and ``chamfer_matrix``.  Deterministic given ``seed``.
    """
    threshold = DEFAULT_THRESHOLD if threshold is None else threshold
    device = next(generator.parameters()).device
    truths = {
        int(label): [as_surface_shape(s, seed=seed * 1009 + 17 * label + i) for i, s in enumerate(shapes)]
        for label, shapes in class_shapes.items()
        if len(shapes)
    }
    if ws is None:
        gen = torch.Generator().manual_seed(seed)
        labels = torch.tensor(sorted(truths), dtype=torch.long).repeat(num_per_class)
        z = torch.randn(labels.shape[0], generator.backbone.z_dim, generator=gen)
        with torch.no_grad():
            ws = generator.mapping(z.to(device), labels.to(device), truncation)
    elif labels is None:
        raise ValueError("labels are required with ws")
    kept, comparisons = [], []
    for i, (w, label) in enumerate(zip(ws, labels.tolist())):
        if label not in truths:
            continue
        shape = generated_shape(generator, w[None].to(device), resolution, threshold, seed=seed * 1009 + i)
        kept.append(label)
        comparisons.append(None if shape is None else compare_with_classes(shape, truths, settings))
    if details is not None:
        details.update(_class_matrices(kept, comparisons, class_names))
    return summarise_classes(kept, comparisons, class_names)


def _class_matrices(
    labels: Sequence[int], comparisons: Sequence[Optional[Mapping[int, Comparison]]], class_names: Optional[Sequence[str]]
) -> Dict[str, Dict[str, Dict[str, float]]]:
    sums: Dict[tuple, list] = {}
    for label, by_class in zip(labels, comparisons):
        for other, comparison in (by_class or {}).items():
            sums.setdefault((label, other), []).append(comparison)
    out: Dict[str, Dict[str, Dict[str, float]]] = {"fscore_matrix": {}, "chamfer_matrix": {}}
    for (label, other), rows in sorted(sums.items()):
        a, b = (class_names[label], class_names[other]) if class_names is not None else (str(label), str(other))
        out["fscore_matrix"].setdefault(a, {})[b] = sum(r.fscore for r in rows) / len(rows)
        out["chamfer_matrix"].setdefault(a, {})[b] = sum(r.chamfer for r in rows) / len(rows)
    return out
