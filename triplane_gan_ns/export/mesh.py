"""``triplane-gan export-mesh`` (``export_mesh``): a coloured or textured mesh (and optionally the density volume) of one generated
object.

1. The EMA generator's triplane is queried for density on an ``N^3`` lattice spanning the scene box
   ``[-scene_bound, scene_bound]^3`` (``N`` points per axis, both faces included), in chunks; for a level of at
   least ``occupancy.THRESHOLD`` and no ``--volume``, only in the cells of the latent's occupancy grid (the
   others hold density below that, and read zero).
2. Marching cubes (``skimage.measure.marching_cubes``) extracts the surface ``density = threshold``.  The
   lattice is padded with one layer of zero density, so surfaces cut by the box are closed there (vertices
   clipped onto the box faces): the mesh is watertight and never leaves the box.
3. Vertices are in world units and world axes (z up), not voxel indices; their colours are the field's RGB
   (the first three colour features) at the vertices.
4. Floaters: only the ``K`` connected components with the most faces are kept (0 keeps all).
5. ``--max-faces N`` simplifies the mesh to about ``N`` faces (quadric decimation) before it is coloured.
6. ``--texture``: instead of vertex colours, the mesh is UV-unwrapped (xatlas) and the field's RGB at the surface
   point under every texel is baked into a ``--texture-size`` square PNG (``texture.py``).  ``.glb`` embeds it in a
   PBR material; ``.obj`` is written with ``<stem>.mtl`` and ``<stem>.png`` beside it (spaces in the stem become
   ``_``); ``.ply`` has no textures.  On one CPU core, texturing added about 5 s to a 128³ export (60k faces) and
   about 25 s to a 256³ one (240k faces), mostly xatlas; ``--max-faces`` shortens it.

Threshold: density is ``softplus(raw - 1)`` per world unit, and the level at which a model's objects look solid
depends on the model and on how long it trained (EG3D uses 10; after a few steps the density stays below 1).
By default the level is automatic (``surface.automatic_threshold``): the latent is seen from
``AUTO_VIEWS`` cameras around it (the pose sampler's radius and field of view, ``AUTO_RESOLUTION``² pixels), the
density is sampled densely along every pixel ray, and the level is the median over the rays that become opaque
of the density where their accumulated opacity crosses 0.5 (half their largest opacity when no ray gets that
opaque).  The chosen level is printed.  ``--density-threshold X`` fixes the level instead; a model whose
density never reaches it is reported with its density range.

Volume (``--volume``): float32 densities on the same lattice, as ``.npy`` (array indexed ``[x, y, z]``) or
``.mrc`` (MRC2014, mode 2, x fastest; voxel size and origin in world units, so that voxel ``(0, 0, 0)`` sits at
``(-bound, -bound, -bound)``).
"""

from __future__ import annotations

import math
import struct
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import trimesh
from jaxtyping import Float, Float32
from nerfstudio.utils.rich_utils import CONSOLE
from torch import Tensor

from triplane_gan_ns.errors import UserError
from triplane_gan_ns.cameras import yaw_pitch_directions
from triplane_gan_ns.fileio import atomic_write, check_creatable_dir
from triplane_gan_ns.generator import TriplaneGenerator
from triplane_gan_ns.latents import Latent, LatentSpec, ModelOrConfig, as_model, check_truncation, resolve_latent
from triplane_gan_ns.model import TriplaneGANModel
from triplane_gan_ns.occupancy import THRESHOLD
from triplane_gan_ns.surface import OPAQUE, automatic_threshold, density_grid, mesh_from_grid, simplify_mesh, vertex_colours
from triplane_gan_ns.texture import textured_mesh

MESH_SUFFIXES = (".ply", ".obj", ".glb")
VOLUME_SUFFIXES = (".npy", ".mrc")
MIN_RESOLUTION, MAX_RESOLUTION = 8, 1024
AUTO_VIEWS = 8
"""Views of the automatic threshold: azimuths k * 45 degrees at elevations alternating +-20 degrees."""
AUTO_RESOLUTION = 32
"""Pixels per side of those views."""
MIN_TEXTURE_SIZE, MAX_TEXTURE_SIZE = 64, 4096
DEFAULT_TEXTURE_SIZE = 1024
TEXTURE_SUFFIXES = (".glb", ".obj")
MIN_FACES = 4


# ---- files ----------------------------------------------------------------------------------------------
def texture_files(path: Path) -> tuple[Path, Path]:
    """The material and image files written beside a textured ``.obj``: ``<stem>.mtl`` and ``<stem>.png``."""
    path = Path(path)
    stem = "_".join(path.stem.split()) or "mesh"
    return path.with_name(f"{stem}.mtl"), path.with_name(f"{stem}.png")


def write_mesh(path: Path, mesh: trimesh.Trimesh) -> None:
    """.ply / .obj / .glb by trimesh (the format follows the suffix), atomically.  A textured ``.obj`` also gets
    its ``texture_files``, each written atomically before the ``.obj`` that names them."""
    path = Path(path)
    if path.suffix.lower() == ".obj" and isinstance(mesh.visual, trimesh.visual.TextureVisuals):
        mtl, png = texture_files(path)
        mesh = mesh.copy()
        mesh.visual.material.name = png.stem
        text, files = trimesh.exchange.obj.export_obj(
            mesh, include_normals=True, return_texture=True, mtl_name=mtl.name, header=None
        )
        for name in (png.name, mtl.name):
            atomic_write(path.with_name(name), lambda tmp, data=files[name]: tmp.write_bytes(data))
        atomic_write(path, lambda tmp: tmp.write_text(text))
        return
    atomic_write(path, lambda tmp: mesh.export(tmp))


def mrc_bytes(volume: Float32[np.ndarray, "nx ny nz"], voxel_size: float, origin: float) -> bytes:
    """An MRC2014 file (mode 2, float32) of a volume indexed ``[x, y, z]``; header in world units."""
    volume = np.asarray(volume, dtype=np.float32)
    nx, ny, nz = volume.shape
    header = bytearray(1024)
    struct.pack_into("<3i", header, 0, nx, ny, nz)  # columns, rows, sections
    struct.pack_into("<i", header, 12, 2)  # mode 2: 32-bit float
    struct.pack_into("<3i", header, 16, 0, 0, 0)  # start indices
    struct.pack_into("<3i", header, 28, nx, ny, nz)  # sampling
    struct.pack_into("<3f", header, 40, nx * voxel_size, ny * voxel_size, nz * voxel_size)  # cell lengths
    struct.pack_into("<3f", header, 52, 90.0, 90.0, 90.0)  # cell angles
    struct.pack_into("<3i", header, 64, 1, 2, 3)  # x, y, z axes along columns, rows, sections
    struct.pack_into("<3f", header, 76, float(volume.min()), float(volume.max()), float(volume.mean()))
    struct.pack_into("<2i", header, 88, 1, 0)  # space group 1 (a single volume), no extended header
    struct.pack_into("<i", header, 108, 20140)  # NVERSION
    struct.pack_into("<3f", header, 196, origin, origin, origin)
    header[208:212] = b"MAP "
    header[212:216] = bytes([0x44, 0x44, 0x00, 0x00])  # little-endian
    struct.pack_into("<f", header, 216, float(volume.std()))
    struct.pack_into("<i", header, 220, 1)
    header[224:304] = b"triplane-gan-ns density".ljust(80)
    return bytes(header) + np.ascontiguousarray(volume.transpose(2, 1, 0)).astype("<f4").tobytes()


def write_volume(path: Path, grid: Float32[np.ndarray, "res res res"], bound: float) -> None:
    """The density lattice as .npy ([x, y, z]) or .mrc, atomically."""
    path = Path(path)
    if path.suffix.lower() == ".mrc":
        data = mrc_bytes(grid, 2.0 * bound / (grid.shape[0] - 1), -bound)
        atomic_write(path, lambda tmp: tmp.write_bytes(data))
    else:

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as f:
                np.save(f, grid.astype(np.float32))

        atomic_write(path, write)


# ---- the command ------------------------------------------------------------------------------------------
def _check_options(
    output: Path,
    resolution: int,
    density_threshold: Optional[float],
    keep_components: int,
    max_faces: int,
    texture: bool,
    texture_size: int,
    volume: Optional[Path],
    chunk_size: int,
    truncation: float,
) -> None:
    if not MIN_RESOLUTION <= resolution <= MAX_RESOLUTION:
        raise UserError(f"--resolution {resolution} is impossible; use {MIN_RESOLUTION}..{MAX_RESOLUTION}")
    if Path(output).suffix.lower() not in MESH_SUFFIXES:
        raise UserError(f"--output {output}: unsupported mesh format; use {', '.join(MESH_SUFFIXES)}")
    if volume is not None and Path(volume).suffix.lower() not in VOLUME_SUFFIXES:
        raise UserError(f"--volume {volume}: unsupported volume format; use {', '.join(VOLUME_SUFFIXES)}")
    if texture and Path(output).suffix.lower() not in TEXTURE_SUFFIXES:
        raise UserError(f"--output {output}: .ply cannot hold a texture; use .glb or .obj with --texture")
    if not MIN_TEXTURE_SIZE <= texture_size <= MAX_TEXTURE_SIZE:
        raise UserError(f"--texture-size {texture_size} is impossible; use {MIN_TEXTURE_SIZE}..{MAX_TEXTURE_SIZE}")
    if max_faces != 0 and max_faces < MIN_FACES:
        raise UserError(f"--max-faces {max_faces}: use 0 (keep all) or at least {MIN_FACES}")
    if density_threshold is not None and not (density_threshold > 0 and math.isfinite(density_threshold)):
        raise UserError(f"--density-threshold {density_threshold}: use a positive finite density such as 10, or leave it out (automatic)")
    check_truncation(truncation)
    if keep_components < 0:
        raise UserError("--keep-components must be 0 (keep all) or more")
    if chunk_size < 1:
        raise UserError("--chunk-size must be positive")
    for path in (output, volume):
        if path is not None:  # a missing folder is created when writing, as render does
            check_creatable_dir(Path(path).absolute().parent)


def latent_field_fns(model: TriplaneGANModel, latent: Latent):
    """(density_fn, colour_fn) of one latent's triplane under the EMA generator's field; the density is only
    evaluated in the cells of the latent's occupancy grid (zero elsewhere, where it is below
    ``occupancy.THRESHOLD``)."""
    planes = _latent_planes(model, latent)
    return model.generator_ema.point_density(planes, THRESHOLD), _colour_fn(model, planes)


def _latent_planes(model: TriplaneGANModel, latent: Latent) -> Float[Tensor, "1 3 channels res res"]:
    with torch.no_grad():
        return model.generator_ema.fixed_planes(latent.ws(model))


def _colour_fn(model: TriplaneGANModel, planes: Float[Tensor, "1 3 channels res res"]):
    def colour_fn(points: Float[Tensor, "num 3"]) -> Float[Tensor, "num 3"]:
        return model.generator_ema.field.query(planes, points.to(model.device))[1][..., :3]

    return colour_fn


def threshold_rays(model: TriplaneGANModel) -> tuple[Float[Tensor, "rays 3"], Float[Tensor, "rays 3"]]:
    """Pixel rays (origins, unit directions) of the ``AUTO_VIEWS`` views of the automatic threshold."""
    k = torch.arange(AUTO_VIEWS)
    yaw = k * (2 * math.pi / AUTO_VIEWS)
    pitch = torch.where(k % 2 == 0, 1.0, -1.0) * math.radians(20.0)
    cameras = model.pose_sampler.cameras_from_directions(yaw_pitch_directions(yaw, pitch), AUTO_RESOLUTION)
    rays = TriplaneGenerator.camera_rays(cameras, torch.zeros(AUTO_VIEWS, dtype=torch.long))
    directions = rays.directions.reshape(-1, 3)
    return rays.origins.reshape(-1, 3).to(model.device), (directions / directions.norm(dim=-1, keepdim=True)).to(model.device)


def choose_threshold(model: TriplaneGANModel, density_fn, chunk_size: int = 1 << 18) -> float:
    """The automatic density threshold of one latent's ``density_fn`` (see the module docstring), printed."""
    level, opacity = automatic_threshold(density_fn, *threshold_rays(model), model.generator_ema.config.scene_bound, chunk_size=chunk_size)
    if opacity == OPAQUE:
        CONSOLE.print(f"density threshold: auto → {level:.3g} (where the renders become opaque)")
    else:
        CONSOLE.print(
            f"density threshold: auto → {level:.3g} (the renders never become opaque: where they reach half "
            f"their highest opacity, {2 * opacity:.2f}); --density-threshold fixes it"
        )
    return level


def export_mesh(
    model: ModelOrConfig,
    latent: LatentSpec,
    output: Path,
    *,
    resolution: int = 256,
    density_threshold: Optional[float] = None,
    keep_components: int = 1,
    max_faces: int = 0,
    texture: bool = False,
    texture_size: int = DEFAULT_TEXTURE_SIZE,
    volume: Optional[Path] = None,
    chunk_size: int = 1 << 18,
    truncation: float = 0.7,
    checkpoint: Optional[Path] = None,
    device: str = "auto",
) -> trimesh.Trimesh:
    """Write the mesh of one latent to ``output`` (.ply, .obj or .glb), as ``triplane-gan export-mesh`` does (see
    the module docstring); returns the mesh written.

    ``model``: a loaded model, or a run's ``config.yml`` (loaded from ``checkpoint``, default the latest, onto
    ``device``).  ``latent``: a ``Latent``, a latent file, or a ``(class, seed)`` pair (class by index or name)
    truncated with ``truncation``.  ``density_threshold`` None chooses the level automatically; ``texture``
    bakes a ``texture_size`` texture (.glb or .obj) instead of vertex colours; ``volume`` also writes the
    density lattice (.npy or .mrc).  Bad options raise ``UserError``.
    """
    _check_options(
        output, resolution, density_threshold, keep_components, max_faces, texture, texture_size, volume, chunk_size,
        truncation,
    )
    model = as_model(model, checkpoint, device)
    latent = resolve_latent(model, latent, truncation)
    gen = model.generator_ema
    bound = gen.config.scene_bound
    planes = _latent_planes(model, latent)
    colour_fn = _colour_fn(model, planes)
    threshold = density_threshold
    if threshold is None:
        threshold = choose_threshold(model, gen.point_density(planes), chunk_size)
    # the volume file needs the density at every lattice point; a surface alone only near its level
    lattice_fn = gen.point_density(planes, None if volume is not None else threshold)
    grid = density_grid(lattice_fn, resolution, bound, chunk_size, progress=True, device=model.device)
    if volume is not None:
        write_volume(volume, grid, bound)
        CONSOLE.print(f"Wrote the {resolution}³ density volume to {volume}")
    mesh = mesh_from_grid(grid, bound, threshold, None, keep_components)
    if max_faces > 0 and len(mesh.faces) > max_faces:
        before = len(mesh.faces)
        mesh = simplify_mesh(mesh, max_faces, bound)
        CONSOLE.print(f"Simplified {before} faces to {len(mesh.faces)}")
    if texture:
        CONSOLE.print(f"Unwrapping {len(mesh.faces)} faces and baking a {texture_size}² texture")
        name = texture_files(output)[1].stem
        mesh = textured_mesh(mesh, colour_fn, texture_size, chunk_size, model.device, name)
    else:
        mesh.visual.vertex_colors = vertex_colours(colour_fn, mesh.vertices, chunk_size, model.device)
    write_mesh(output, mesh)
    extra = ""
    if texture and Path(output).suffix.lower() == ".obj":
        extra = " with " + " and ".join(p.name for p in texture_files(output))
    CONSOLE.print(
        f"Wrote {output}{extra}: {len(mesh.vertices)} vertices, {len(mesh.faces)} faces "
        f"({latent.name}, density threshold {threshold:.6g})"
    )
    return mesh
