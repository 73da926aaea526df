"""The surface of a density field: its values on a lattice over the scene box, and the mesh where it crosses a
level (marching cubes), optionally with colours at the vertices.

Used by ``export-mesh``, by the pose-free geometry measure (``alignment.py``) and by ``eval``.

* ``density_grid``: the field on an ``N^3`` lattice spanning ``[-bound, bound]^3`` (``N`` points per axis, both
  faces included), in chunks, indexed ``[x, y, z]``.
* ``mesh_from_grid``: marching cubes (``skimage.measure.marching_cubes``) of ``density = threshold``.  The lattice
  is padded with one layer of zero density, so surfaces cut by the box are closed there (vertices clipped onto
  the box faces): the mesh is watertight and never leaves the box.  Vertices are in world units and axes (z
  up), not voxel indices; only the ``K`` connected components with the most faces are kept (0 keeps all).
* ``simplify_mesh``: quadric edge-collapse decimation (``fast-simplification``, through trimesh) to a face budget,
  vertices kept inside the box.

* ``automatic_threshold``: a level chosen from the field itself, where its renders become opaque.  Density is
  ``softplus(raw - 1)`` per world unit, and what level makes a good surface depends on the model and on how far
  it has trained (EG3D uses 10 for its shapes; a generator after a few steps never gets near it).  So along
  rays of a few views the density is sampled densely, and for each ray that becomes opaque (accumulated opacity
  above 0.5) the density in the sample where its opacity crosses 0.5 is taken; the level is the median over
  those rays.  When no ray gets that opaque it is the same with half the largest opacity of any ray instead.
"""

from __future__ import annotations

from typing import Callable, Optional, Tuple

import numpy as np
import torch
import trimesh
from jaxtyping import Float, Float32
from nerfstudio.utils.rich_utils import CONSOLE
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from skimage.measure import marching_cubes
from torch import Tensor

from triplane_gan_ns.errors import UserError
from triplane_gan_ns.renderer import box_intersection

DEFAULT_THRESHOLD = 10.0
"""A fixed level (EG3D's for its shapes): what eval's shape comparison uses unless told otherwise."""
OPAQUE = 0.5
"""Accumulated opacity at which a ray counts as opaque for ``automatic_threshold``."""

DensityFn = Callable[[Float[Tensor, "num 3"]], Tensor]
"""Points [n, 3] -> densities [n] (or [n, 1])."""
ColourFn = Callable[[Float[Tensor, "num 3"]], Float[Tensor, "num 3"]]
"""Points [n, 3] -> RGB in [0, 1]."""


def lattice_axis(resolution: int, bound: float) -> Float[Tensor, "resolution"]:
    """Coordinates of the lattice points along one axis (both box faces included)."""
    return torch.linspace(-bound, bound, resolution, dtype=torch.float64).float()


@torch.no_grad()
def density_grid(
    density_fn: DensityFn,
    resolution: int,
    bound: float,
    chunk_size: int = 1 << 18,
    progress: bool = False,
    device: torch.device | str = "cpu",
) -> Float32[np.ndarray, "res res res"]:
    """``density_fn`` on the ``resolution^3`` lattice over ``[-bound, bound]^3``, indexed ``[x, y, z]``."""
    axis = lattice_axis(resolution, bound).to(device)
    total = resolution**3
    out = np.empty(total, dtype=np.float32)
    columns = (TextColumn("querying density"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=CONSOLE, disable=not progress) as bar:
        task = bar.add_task("density", total=total)
        for start in range(0, total, chunk_size):
            index = torch.arange(start, min(start + chunk_size, total), device=device)
            ix, rest = index // resolution**2, index % resolution**2
            points = torch.stack([axis[ix], axis[rest // resolution], axis[rest % resolution]], dim=-1)
            out[start : start + index.shape[0]] = density_fn(points).reshape(-1).float().cpu().numpy()
            bar.advance(task, index.shape[0])
    return out.reshape(resolution, resolution, resolution)


@torch.no_grad()
def vertex_colours(colour_fn: ColourFn, vertices: np.ndarray, chunk_size: int = 1 << 18, device="cpu") -> np.ndarray:
    """RGBA uint8 colours of ``colour_fn`` ([0, 1] RGB) at the vertices."""
    rgba = np.full((len(vertices), 4), 255, dtype=np.uint8)
    for start in range(0, len(vertices), chunk_size):
        points = torch.as_tensor(vertices[start : start + chunk_size], dtype=torch.float32, device=device)
        rgb = colour_fn(points).reshape(-1, 3).clamp(0, 1).float().cpu().numpy()
        rgba[start : start + len(points), :3] = np.round(rgb * 255).astype(np.uint8)
    return rgba


def keep_largest_components(mesh: trimesh.Trimesh, keep: int) -> trimesh.Trimesh:
    """The ``keep`` connected components with the most faces (all of them when ``keep`` is 0)."""
    if keep <= 0 or len(mesh.faces) == 0:
        return mesh
    parts = mesh.split(only_watertight=False)
    if len(parts) <= keep:
        return mesh
    parts = sorted(parts, key=lambda m: len(m.faces), reverse=True)[:keep]
    return trimesh.util.concatenate(parts)


def simplify_mesh(mesh: trimesh.Trimesh, max_faces: int, bound: Optional[float] = None) -> trimesh.Trimesh:
    """At most about ``max_faces`` faces by quadric decimation (the mesh itself when it has no more); vertex colours
    are dropped.  With ``bound``, vertices are clipped into ``[-bound, bound]^3`` afterwards."""
    if len(mesh.faces) <= max_faces:
        return mesh
    simple = mesh.simplify_quadric_decimation(face_count=max_faces)
    vertices = np.asarray(simple.vertices)
    if bound is not None:
        vertices = np.clip(vertices, -bound, bound)
    return trimesh.Trimesh(vertices=vertices, faces=np.asarray(simple.faces), process=False)


def mesh_from_grid(
    grid: Float32[np.ndarray, "res res res"],
    bound: float,
    threshold: float,
    colour_fn: Optional[ColourFn] = None,
    keep_components: int = 0,
    device: torch.device | str = "cpu",
) -> trimesh.Trimesh:
    """Marching cubes at ``threshold`` on a lattice from ``density_grid`` (watertight, inside the box)."""
    low, high = float(grid.min()), float(grid.max())
    if not high > threshold:
        raise UserError(
            f"the density never exceeds the threshold {threshold:g} (it ranges {low:.3g}..{high:.3g}); "
            "lower --density-threshold, or leave it out for the automatic level"
        )
    resolution = grid.shape[0]
    spacing = 2.0 * bound / (resolution - 1)
    padded = np.pad(grid, 1, mode="constant", constant_values=min(0.0, low))
    # density rises towards the inside: "ascent" winds the faces with their normals pointing outwards
    verts, faces, _, _ = marching_cubes(padded, level=threshold, spacing=(spacing,) * 3, gradient_direction="ascent")
    verts = np.clip(verts - spacing - bound, -bound, bound)  # padded index 0 lies one step outside the box
    mesh = trimesh.Trimesh(vertices=verts, faces=faces, process=False)
    mesh = keep_largest_components(mesh, keep_components)
    if colour_fn is not None:
        mesh.visual.vertex_colors = vertex_colours(colour_fn, mesh.vertices, device=device)
    return mesh


def extract_mesh(
    density_fn: DensityFn,
    colour_fn: Optional[ColourFn],
    resolution: int,
    bound: float,
    threshold: float = DEFAULT_THRESHOLD,
    keep_components: int = 0,
    chunk_size: int = 1 << 18,
    progress: bool = False,
) -> trimesh.Trimesh:
    """Mesh of the surface ``density = threshold`` of any density function over ``[-bound, bound]^3``.

    ``density_fn`` maps points [n, 3] to densities [n] (or [n, 1]); ``colour_fn`` to RGB [n, 3] in [0, 1]
    (None: no vertex colours).  Vertices are in the functions' (world) coordinates.
    """
    grid = density_grid(density_fn, resolution, bound, chunk_size, progress)
    return mesh_from_grid(grid, bound, threshold, colour_fn, keep_components)


# ---- automatic level ------------------------------------------------------------------------------------------
@torch.no_grad()
def ray_densities(
    density_fn: DensityFn,
    origins: Float[Tensor, "rays 3"],
    directions: Float[Tensor, "rays 3"],
    bound: float,
    num_samples: int = 256,
    chunk_size: int = 1 << 18,
) -> Tuple[Float[Tensor, "rays samples"], Float[Tensor, "rays samples"]]:
    """``density_fn`` at ``num_samples`` evenly spaced midpoints along each ray's stretch inside
    ``[-bound, bound]^3`` (unit ``directions``), and the length of each sample's interval (0 for rays that
    miss the box)."""
    near, far = box_intersection(origins, directions, bound)
    far = torch.where(far - near > 2e-6, far, near)  # a ray that misses the box has no interval
    edges = near + (far - near) * torch.linspace(0.0, 1.0, num_samples + 1, device=origins.device)
    mid = (edges[:, 1:] + edges[:, :-1]) / 2
    points = (origins[:, None] + directions[:, None] * mid[..., None]).reshape(-1, 3)
    values = torch.cat([density_fn(points[i : i + chunk_size]).reshape(-1).float() for i in range(0, len(points), chunk_size)])
    return values.view(mid.shape).to(origins.device), edges[:, 1:] - edges[:, :-1]


def crossing_densities(
    density: Float[Tensor, "rays samples"], deltas: Float[Tensor, "rays samples"], opacity: float
) -> Float[Tensor, "opaque"]:
    """For each ray whose accumulated opacity ``1 - exp(-sum sigma_i delta_i)`` reaches ``opacity``: the
    density of the sample in which it does (samples in ray order)."""
    accumulated = 1 - torch.exp(-torch.cumsum(density * deltas, dim=-1))  # after each sample
    crossed = accumulated >= opacity
    reached = crossed[:, -1]
    first = crossed[reached].float().argmax(dim=-1)
    return density[reached].gather(-1, first[:, None])[:, 0]


def opaque_level(density: Float[Tensor, "rays samples"], deltas: Float[Tensor, "rays samples"]) -> Tuple[float, float]:
    """The automatic surface level of densities sampled along rays (see the module docstring), and the opacity
    whose crossing defined it (``OPAQUE``, or half the largest opacity of any ray when none reaches ``OPAQUE``).
    A ``UserError`` when the density is zero along every ray."""
    most = float(1 - torch.exp(-(density * deltas).sum(dim=-1).max()))
    if not most > 0:
        raise UserError("the density is zero along every ray of the views: there is no surface; pass --density-threshold")
    opacity = OPAQUE if most >= OPAQUE else most / 2
    return float(torch.quantile(crossing_densities(density, deltas, opacity).double(), 0.5)), opacity


def automatic_threshold(
    density_fn: DensityFn,
    origins: Float[Tensor, "rays 3"],
    directions: Float[Tensor, "rays 3"],
    bound: float,
    num_samples: int = 256,
    chunk_size: int = 1 << 18,
) -> Tuple[float, float]:
    """``opaque_level`` of ``density_fn`` along the given rays (the pixel rays of a few views, unit directions)."""
    return opaque_level(*ray_densities(density_fn, origins, directions, bound, num_samples, chunk_size))
