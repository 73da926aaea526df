"""Rendered views of triangle meshes in the SRN / ShapeNet-renders layout, with the meshes as ground truth.

The layout is exactly that of :mod:`triplane_gan_ns.data.embedded` (read by the renders dataparser)::

    ROOT/dataset.json                                spec, class names, counts, object list
    ROOT/<category>/<category>_0001/rgb/000000.png   RGB, white background
    ROOT/<category>/<category>_0001/pose/000000.txt  4x4 camera-to-world (nerfstudio / OpenGL convention)
    ROOT/<category>/<category>_0001/intrinsics.txt   "fx cx cy 0." / "0. 0. 0." / "1." / "H W"
    ROOT/<category>/<category>_0001/shape.json       {"kind": "mesh", "source": ..., "transform": 4x4}

``transform`` maps the source mesh's coordinates to the rendered (normalised, z-up) world: the mesh is
rotated to z-up, its bounding box centred at the origin and scaled so that every vertex lies within
``MAX_RADIUS`` of the origin, touching it.

Rendering is CPU ray casting with trimesh (the embree backend when ``embreex`` is installed, trimesh's
pure-numpy triangle intersector otherwise), using the camera rays, light and shading of the embedded data.
"""

from __future__ import annotations

import colorsys
import contextlib
import hashlib
import json
import math
import os
import shutil
from pathlib import Path
from typing import Any, Dict, List, Literal, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import trimesh
from jaxtyping import Bool, Float
from PIL import Image
from torch import Tensor

from triplane_gan_ns.data.embedded import AMBIENT, DIFFUSE, LIGHT_DIRECTION
from triplane_gan_ns.data.renders_layout import install_dataset, pixel_rays, write_matrix
from triplane_gan_ns.data.shapes import MAX_RADIUS
from triplane_gan_ns.errors import UserError
from triplane_gan_ns.cameras import focal_from_fov, look_at, uniform_sphere_directions

DATASET_NAME = "mesh-renders"
DATASET_VERSION = 1

SAMPLE_MESH_FILES: Dict[str, Tuple[str, ...]] = {
    "bunny": ("bunny.obj", "bunny10k_textured.obj"),
    "cow": ("cow.obj",),
    "airplane": ("airplane.obj", "colored_airplane.ply"),
}
"""pymeshlab's sample meshes (``pymeshlab/tests/sample_meshes``) by category; all are y-up."""

CATEGORY_COLORS: Dict[str, Tuple[float, float, float]] = {
    "bunny": (0.80, 0.66, 0.50),
    "cow": (0.62, 0.52, 0.44),
    "airplane": (0.60, 0.68, 0.80),
}
"""Albedo of meshes without vertex, face or texture colours, by category."""

_Y_UP_TO_Z_UP = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
"""+90 degrees about x: (x, y, z) -> (x, -z, y), so +y becomes +z."""

Array = Union[np.ndarray, Tensor]


def category_color(category: str) -> Tuple[float, float, float]:
    """:data:`CATEGORY_COLORS`, or a muted colour with a hue derived from the name for other categories."""
    if category in CATEGORY_COLORS:
        return CATEGORY_COLORS[category]
    hue = int(hashlib.sha1(category.encode("utf-8")).hexdigest()[:8], 16) / 2**32
    r, g, b = colorsys.hsv_to_rgb(hue, 0.45, 0.85)
    return (r, g, b)


def ray_backend(mesh: trimesh.Trimesh) -> str:
    """``"embree"`` when ``mesh.ray`` is trimesh's embree intersector, else ``"triangle"`` (pure numpy)."""
    return "embree" if "embree" in type(mesh.ray).__module__ else "triangle"


def _load_mesh(path: Path) -> trimesh.Trimesh:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"mesh file {path} does not exist; check the path")
    try:
        mesh = trimesh.load(str(path), force="mesh")
    except Exception as exc:  # trimesh raises many exception types for unreadable files
        raise UserError(f"cannot read mesh {path} ({exc}); pass a mesh file trimesh can load (obj, ply, off, glb, stl)")
    if not isinstance(mesh, trimesh.Trimesh) or len(mesh.faces) == 0:
        raise UserError(f"mesh file {path} holds no triangles; pass a triangle mesh")
    return mesh


def normalizing_transform(
    vertices: Float[np.ndarray, "n 3"], up_axis: Literal["y", "z"] = "y", radius: float = MAX_RADIUS
) -> Float[np.ndarray, "4 4"]:
    """4x4 similarity taking ``vertices`` to z-up, bounding box centred at the origin, max vertex norm ``radius``."""
    if up_axis not in ("y", "z"):
        raise UserError(f"up_axis must be 'y' or 'z', not {up_axis!r}")
    rotation = np.eye(4)
    if up_axis == "y":
        rotation[:3, :3] = _Y_UP_TO_Z_UP
    rotated = np.asarray(vertices, dtype=np.float64) @ rotation[:3, :3].T
    centre = 0.5 * (rotated.min(axis=0) + rotated.max(axis=0))
    extent = float(np.linalg.norm(rotated - centre, axis=1).max())
    if not math.isfinite(extent) or extent <= 0.0:
        raise UserError("the mesh has zero size (all vertices coincide); pass a mesh with extent")
    translate = np.eye(4)
    translate[:3, 3] = -centre
    scale = np.diag([radius / extent] * 3 + [1.0])
    return scale @ translate @ rotation


def load_normalized_mesh(
    path: Union[str, Path], up_axis: Literal["y", "z"] = "y"
) -> Tuple[trimesh.Trimesh, Float[np.ndarray, "4 4"]]:
    """Load a mesh and normalise it into the scene; returns the mesh and the source-to-world transform.

    The mesh is rotated so that its ``up_axis`` becomes +z (world is z-up), its bounding box is centred at
    the origin and it is scaled so that the origin-centred sphere of radius ``MAX_RADIUS`` (0.75) bounds it
    tightly (the farthest vertex lies on that sphere).  Only vertices used by faces count.
    """
    mesh = _load_mesh(Path(path))
    used = mesh.vertices[np.unique(mesh.faces)]
    transform = normalizing_transform(used, up_axis)
    mesh.apply_transform(transform)
    return mesh, transform


def load_object_mesh(object_dir: Union[str, Path]) -> Tuple[trimesh.Trimesh, Float[np.ndarray, "4 4"]]:
    """The normalised ground-truth mesh of one object directory of a mesh data set, and its transform."""
    spec = json.loads((Path(object_dir) / "shape.json").read_text())
    if spec.get("kind") != "mesh":
        raise UserError(f"{object_dir}/shape.json does not describe a mesh (kind {spec.get('kind')!r})")
    mesh = _load_mesh(Path(spec["source"]))
    transform = np.asarray(spec["transform"], dtype=np.float64)
    mesh.apply_transform(transform)
    return mesh, transform


def _texture_image(mesh: trimesh.Trimesh) -> Optional[Image.Image]:
    material = getattr(mesh.visual, "material", None)
    for name in ("image", "baseColorTexture"):
        image = getattr(material, name, None)
        if isinstance(image, Image.Image):
            return image
    return None


def surface_albedo(
    mesh: trimesh.Trimesh,
    triangles: np.ndarray,
    points: Float[np.ndarray, "k 3"],
    default: Sequence[float],
) -> Float[np.ndarray, "k 3"]:
    """RGB albedo in [0, 1] at surface ``points`` lying on faces ``triangles``.

    Texture (bilinear lookup at the barycentrically interpolated UV), else vertex colours (interpolated
    barycentrically), else face colours, else ``default``.
    """
    k = len(triangles)
    visual = mesh.visual
    kind = visual.kind
    if k == 0:
        return np.zeros((0, 3))
    if kind == "texture":
        uv = getattr(visual, "uv", None)
        image = _texture_image(mesh)
        if uv is not None and image is not None and len(uv) == len(mesh.vertices):
            bary = trimesh.triangles.points_to_barycentric(mesh.triangles[triangles], points)
            hit_uv = (np.asarray(uv, dtype=np.float64)[mesh.faces[triangles]] * bary[:, :, None]).sum(axis=1)
            hit_uv = np.where((hit_uv < 0.0) | (hit_uv > 1.0), hit_uv % 1.0, hit_uv)
            colors = trimesh.visual.color.uv_to_interpolated_color(hit_uv, image)
            return colors[:, :3].astype(np.float64) / 255.0
    elif kind == "vertex":
        bary = trimesh.triangles.points_to_barycentric(mesh.triangles[triangles], points)
        bary = np.clip(np.nan_to_num(bary, nan=1.0 / 3.0), 0.0, 1.0)
        bary = bary / bary.sum(axis=1, keepdims=True).clip(min=1e-12)
        corner = np.asarray(visual.vertex_colors, dtype=np.float64)[mesh.faces[triangles], :3] / 255.0
        return (corner * bary[:, :, None]).sum(axis=1)
    elif kind == "face":
        return np.asarray(visual.face_colors, dtype=np.float64)[triangles, :3] / 255.0
    return np.broadcast_to(np.asarray(default, dtype=np.float64), (k, 3)).copy()


def _first_hits(
    mesh: trimesh.Trimesh, origins: Float[np.ndarray, "r 3"], dirs: Float[np.ndarray, "r 3"]
) -> Tuple[np.ndarray, Float[np.ndarray, "r"]]:
    """Index of the first face each ray hits (-1 = miss) and the float64 ray distance to it (inf = miss)."""
    tri = np.asarray(mesh.ray.intersects_first(origins, dirs), dtype=np.int64)
    t = np.full(len(origins), np.inf)
    hit = np.nonzero(tri >= 0)[0]
    if hit.size:
        normals = mesh.face_normals[tri[hit]]
        corner = mesh.triangles[tri[hit], 0]
        denom = (dirs[hit] * normals).sum(-1)
        with np.errstate(divide="ignore", invalid="ignore"):
            dist = ((corner - origins[hit]) * normals).sum(-1) / denom
        good = np.isfinite(dist) & (dist > 0.0)
        t[hit[good]] = dist[good]
        tri[hit[~good]] = -1
    return tri, t


def render_mesh_views(
    mesh: trimesh.Trimesh,
    camera_to_world: Union[Float[Tensor, "n 3 4"], Float[np.ndarray, "n 3 4"]],
    resolution: int,
    fov_degrees: float,
    background: Sequence[float] = (1.0, 1.0, 1.0),
    light_dir: Sequence[float] = LIGHT_DIRECTION,
    color: Optional[Sequence[float]] = None,
    supersample: int = 2,
) -> Tuple[Float[Tensor, "n h w 3"], Float[Tensor, "n h w"], Float[Tensor, "n h w"]]:
    """:func:`render_mesh` for a batch of cameras (one ray-casting call for all of them)."""
    c2w = torch.as_tensor(np.asarray(camera_to_world) if not isinstance(camera_to_world, Tensor) else camera_to_world)
    c2w = c2w[..., :3, :4].float().cpu()
    n = c2w.shape[0]
    origins_t, dirs_t = pixel_rays(c2w, resolution, fov_degrees, supersample)
    origins = origins_t.reshape(-1, 3).double().numpy()
    dirs = dirs_t.reshape(-1, 3).double().numpy()
    tri, t = _first_hits(mesh, origins, dirs)
    hit = tri >= 0

    colour = np.broadcast_to(np.asarray(background, dtype=np.float64), (len(tri), 3)).copy()
    idx = np.nonzero(hit)[0]
    if idx.size:
        points = origins[idx] + t[idx, None] * dirs[idx]
        normals = mesh.face_normals[tri[idx]]
        normals = np.where(((normals * dirs[idx]).sum(-1) > 0.0)[:, None], -normals, normals)
        light = np.asarray(light_dir, dtype=np.float64)
        light = light / np.linalg.norm(light)
        lambert = (normals @ light).clip(min=0.0)
        albedo = surface_albedo(mesh, tri[idx], points, color if color is not None else (0.8, 0.8, 0.8))
        colour[idx] = albedo * (AMBIENT + DIFFUSE * lambert)[:, None]

    s = supersample
    blocks = (n, resolution, s, resolution, s)
    rgb = torch.from_numpy(colour).float().reshape(*blocks, 3).mean(dim=(2, 4))
    hit_t = torch.from_numpy(hit)
    hit_f = hit_t.float().reshape(blocks)
    alpha = hit_f.mean(dim=(2, 4))
    depth_all = torch.from_numpy(np.where(hit, t, 0.0))
    depth_sum = depth_all.reshape(blocks).sum(dim=(2, 4))
    hits = hit_f.sum(dim=(2, 4)).double()
    depth = torch.where(hits > 0, depth_sum / hits.clamp(min=1.0), torch.full_like(depth_sum, math.inf)).float()
    return rgb.clamp(0.0, 1.0), alpha, depth


def render_mesh(
    mesh: trimesh.Trimesh,
    camera_to_world: Union[Float[Tensor, "3 4"], Float[np.ndarray, "3 4"]],
    resolution: int,
    fov_degrees: float,
    background: Sequence[float] = (1.0, 1.0, 1.0),
    light_dir: Sequence[float] = LIGHT_DIRECTION,
    color: Optional[Sequence[float]] = None,
    supersample: int = 2,
) -> Tuple[Float[Tensor, "h w 3"], Float[Tensor, "h w"], Float[Tensor, "h w"]]:
    """Render ``mesh`` from one camera by ray casting (CPU).

    Camera rays are those of :func:`triplane_gan_ns.data.embedded.render_shape` (pinhole, principal point at
    the image centre, ``supersample``² evenly spaced samples per pixel, OpenGL camera axes).  Shading is
    Lambertian with face normals turned towards the camera: ``albedo * (AMBIENT + DIFFUSE * max(n.l, 0))``
    with ``l`` the normalised ``light_dir`` (world space, towards the light).  The albedo comes from the
    mesh's texture, vertex colours or face colours (see :func:`surface_albedo`), else ``color`` (default
    light grey).

    Returns ``rgb`` in [0, 1] composited over ``background``, ``alpha`` (fraction of samples that hit) and
    ``depth``: the mean distance from the camera centre along the ray over the hitting samples, ``inf``
    where none hit.
    """
    c2w = camera_to_world if isinstance(camera_to_world, Tensor) else torch.as_tensor(np.asarray(camera_to_world))
    rgb, alpha, depth = render_mesh_views(
        mesh, c2w[None], resolution, fov_degrees, background, light_dir, color, supersample
    )
    return rgb[0], alpha[0], depth[0]


def sample_meshes(root: Optional[Path] = None) -> Dict[str, List[Path]]:
    """pymeshlab's sample meshes by category (:data:`SAMPLE_MESH_FILES`), only those that exist.

    ``root`` defaults to ``<pymeshlab package>/tests/sample_meshes``.
    """
    if root is None:
        try:
            import pymeshlab
        except ImportError as exc:
            raise UserError(f"pymeshlab is not installed ({exc}); install it with `pip install pymeshlab`")
        root = Path(pymeshlab.__file__).resolve().parent / "tests" / "sample_meshes"
    root = Path(root)
    if not root.is_dir():
        raise UserError(
            f"pymeshlab's sample meshes were not found at {root}; reinstall pymeshlab "
            "(`pip install --force-reinstall pymeshlab`) or pass your own meshes"
        )
    found: Dict[str, List[Path]] = {}
    for category, names in SAMPLE_MESH_FILES.items():
        paths = [root / name for name in names if (root / name).is_file()]
        if paths:
            found[category] = paths
    if not found:
        expected = ", ".join(n for names in SAMPLE_MESH_FILES.values() for n in names)
        raise UserError(f"none of pymeshlab's sample meshes ({expected}) is in {root}; reinstall pymeshlab")
    return found


def _sha1(path: Path) -> str:
    digest = hashlib.sha1()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _check_category(category: str) -> None:
    if not category or category.startswith(".") or "/" in category or "\\" in category:
        raise UserError(f"category name {category!r} is not a valid folder name; use plain names like 'chair'")


def _plan(meshes: Mapping[str, Sequence[Union[str, Path]]]) -> Tuple[List[str], List[Dict[str, Any]]]:
    """Sorted class names and the object list (without rendering)."""
    if not meshes or not any(meshes.values()):
        raise UserError("no meshes given; pass {category: [mesh paths]} with at least one mesh")
    class_names = sorted(c for c, paths in meshes.items() if paths)
    objects = []
    for class_index, category in enumerate(class_names):
        _check_category(category)
        for i, source in enumerate(meshes[category]):
            source = Path(source).resolve()
            if not source.is_file():
                raise UserError(f"mesh file {source} (category {category!r}) does not exist; check the path")
            objects.append(
                {
                    "class_name": category,
                    "class_index": class_index,
                    "path": f"{category}/{category}_{i:04d}",
                    "source": str(source),
                    "source_sha1": _sha1(source),
                }
            )
    return class_names, objects


def _is_complete(root: Path, spec: Dict[str, Any], objects: List[Dict[str, Any]]) -> bool:
    try:
        meta = json.loads((root / "dataset.json").read_text())
    except (OSError, ValueError):
        return False
    return meta.get("name") == DATASET_NAME and meta.get("spec") == spec and meta.get("objects") == objects


def _progress_bar(enabled: bool) -> Any:
    if not enabled:
        return contextlib.nullcontext()
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(
        TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()
    )


def _write_dataset(
    root: Path, spec: Dict[str, Any], class_names: List[str], objects: List[Dict[str, Any]], progress: bool
) -> None:
    generator = torch.Generator().manual_seed(int(spec["seed"]))
    res = int(spec["resolution"])
    views = int(spec["views_per_object"])
    focal = focal_from_fov(res, spec["fov_degrees"])
    intrinsics = f"{focal:.6f} {res / 2.0:.6f} {res / 2.0:.6f} 0.\n0. 0. 0.\n1.\n{res} {res}\n"
    bottom = np.array([[0.0, 0.0, 0.0, 1.0]])
    bar = _progress_bar(progress)
    with bar:
        task = bar.add_task("Rendering meshes", total=len(objects)) if progress else None
        for obj in objects:
            mesh, transform = load_normalized_mesh(Path(obj["source"]), spec["up_axis"])
            eyes = spec["camera_radius"] * uniform_sphere_directions(views, generator)
            poses = look_at(eyes)
            rgb, _, _ = render_mesh_views(
                mesh, poses, res, spec["fov_degrees"], color=category_color(obj["class_name"])
            )
            obj_dir = root / obj["path"]
            (obj_dir / "rgb").mkdir(parents=True)
            (obj_dir / "pose").mkdir()
            images = (rgb * 255.0).round().clamp(0, 255).to(torch.uint8).numpy()
            for view in range(views):
                Image.fromarray(images[view]).save(obj_dir / "rgb" / f"{view:06d}.png")
                matrix = np.concatenate([poses[view].double().numpy(), bottom], axis=0)
                write_matrix(obj_dir / "pose" / f"{view:06d}.txt", matrix)
            (obj_dir / "intrinsics.txt").write_text(intrinsics)
            shape = {"kind": "mesh", "source": obj["source"], "transform": transform.tolist()}
            (obj_dir / "shape.json").write_text(json.dumps(shape, indent=2) + "\n")
            if progress:
                bar.advance(task)

    counts = {c: sum(o["class_name"] == c for o in objects) for c in class_names}
    meta = {
        "name": DATASET_NAME,
        "spec": spec,
        "class_names": class_names,
        "num_classes": len(class_names),
        "objects_per_class": counts,
        "views_per_object": views,
        "num_objects": len(objects),
        "num_images": len(objects) * views,
        "image_size": [res, res],
        "pose_convention": "opengl",
        "background": [1.0, 1.0, 1.0],
        "objects": objects,
    }
    (root / "dataset.json").write_text(json.dumps(meta, indent=2) + "\n")


def generate_mesh_dataset(
    meshes: Mapping[str, Sequence[Union[str, Path]]],
    dest: Union[str, Path],
    views_per_object: int = 8,
    resolution: int = 64,
    camera_radius: float = 2.5,
    fov_degrees: float = 40.0,
    seed: int = 0,
    progress: bool = True,
    up_axis: Literal["y", "z"] = "y",
) -> Path:
    """Render ``{category: [mesh paths]}`` into ``dest`` in the embedded data set's layout; returns ``dest``.

    Categories become classes in sorted order; the objects of a category are ``<category>_0000``, ... in the
    order given.  Each object is normalised with :func:`load_normalized_mesh` and seen from
    ``views_per_object`` cameras uniform on the sphere of radius ``camera_radius``, looking at the origin
    (one seeded generator draws all of them, object by object).  Deterministic given the arguments and the
    mesh files.  Returns at once if ``dest`` already holds this data set (same spec and same source files by
    content); otherwise renders into ``<dest>.tmp-<pid>`` and renames it onto ``dest``, so ``dest`` is either
    absent or complete.
    """
    dest = Path(dest)
    spec = {
        "views_per_object": int(views_per_object),
        "resolution": int(resolution),
        "camera_radius": float(camera_radius),
        "fov_degrees": float(fov_degrees),
        "seed": int(seed),
        "up_axis": str(up_axis),
        "version": DATASET_VERSION,
    }
    if spec["up_axis"] not in ("y", "z"):
        raise UserError(f"up_axis must be 'y' or 'z', not {up_axis!r}")
    class_names, objects = _plan(meshes)
    if _is_complete(dest, spec, objects):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f"{dest.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        tmp.mkdir()
        _write_dataset(tmp, spec, class_names, objects, progress)
        install_dataset(tmp, dest, lambda root: _is_complete(root, spec, objects))
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


def winding_numbers(
    mesh: trimesh.Trimesh, points: Float[np.ndarray, "n 3"], max_elements: int = 2_000_000
) -> Float[np.ndarray, "n"]:
    """Generalised winding number of ``mesh`` at ``points`` (sum of signed solid angles / 4 pi).

    About ±1 inside and 0 outside a closed mesh, and degrades gracefully for meshes with holes.  Exact
    (no acceleration structure): cost ``n * faces``, evaluated in chunks of ``max_elements`` point-face pairs.
    """
    points = np.asarray(points, dtype=np.float64)
    tris = np.asarray(mesh.triangles, dtype=np.float64)
    out = np.zeros(len(points))
    chunk = max(1, max_elements // max(1, len(tris)))
    for start in range(0, len(points), chunk):
        p = points[start : start + chunk, None, None, :]
        rel = tris[None] - p
        a, b, c = rel[:, :, 0], rel[:, :, 1], rel[:, :, 2]
        la, lb, lc = (np.linalg.norm(v, axis=-1) for v in (a, b, c))
        det = (a * np.cross(b, c)).sum(-1)
        den = la * lb * lc + (a * b).sum(-1) * lc + (b * c).sum(-1) * la + (c * a).sum(-1) * lb
        out[start : start + chunk] = np.arctan2(det, den).sum(-1) / (2.0 * np.pi)
    return out


def mesh_occupancy(
    mesh: trimesh.Trimesh,
    transform: Optional[Union[Float[np.ndarray, "4 4"], Sequence[Sequence[float]]]],
    points: Union[Float[np.ndarray, "n 3"], Float[Tensor, "n 3"]],
) -> Union[Bool[np.ndarray, "n"], Bool[Tensor, "n"]]:
    """Whether each world-space point lies inside the mesh.

    ``mesh`` is in its source coordinates and ``transform`` the source-to-world transform (as stored in
    ``shape.json``); pass ``None`` (identity) for a mesh already in world coordinates.  Watertight meshes use
    trimesh's ``contains`` (ray parity, checked in two directions); other meshes the generalised winding
    number (``|w| > 0.5``).  Returns the array type of ``points``.
    """
    as_torch = isinstance(points, Tensor)
    pts = points.detach().cpu().double().numpy() if as_torch else np.asarray(points, dtype=np.float64)
    if transform is not None:
        inverse = np.linalg.inv(np.asarray(transform, dtype=np.float64))
        pts = pts @ inverse[:3, :3].T + inverse[:3, 3]
    if mesh.is_watertight:
        inside = np.asarray(mesh.contains(pts), dtype=bool)
    else:
        inside = np.abs(winding_numbers(mesh, pts)) > 0.5
    return torch.from_numpy(inside) if as_torch else inside
