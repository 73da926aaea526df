"""The embedded default data set: analytic shapes rendered headless on CPU, generated on first use and cached.

Layout (the SRN / ShapeNet-renders layout)::

    ROOT/dataset.json                              spec, class names, counts, object list
    ROOT/<class>/<class>_0003/rgb/000000.png       RGB, white background
    ROOT/<class>/<class>_0003/pose/000000.txt      4x4 camera-to-world (nerfstudio / OpenGL convention)
    ROOT/<class>/<class>_0003/intrinsics.txt       "fx cx cy 0." / "0. 0. 0." / "1." / "H W"
    ROOT/<class>/<class>_0003/shape.json           the ground-truth :class:`Shape`

Cameras look down their local -z axis with +y up; world is z-up.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Dict, Iterator, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float
from PIL import Image
from torch import Tensor

from triplane_gan_ns.data.renders_layout import install_dataset, pixel_rays, write_matrix
from triplane_gan_ns.data.shapes import CLASS_NAMES, MAX_RADIUS, Shape, random_shape
from triplane_gan_ns.cameras import focal_from_fov, look_at, uniform_sphere_directions

DATASET_NAME = "embedded-shapes"
LIGHT_DIRECTION: Tuple[float, float, float] = (0.35, 0.25, 1.0)
"""Direction towards the light, world space (normalised before use)."""
AMBIENT = 0.35
DIFFUSE = 0.65
_BOUND_RADIUS = MAX_RADIUS + 0.05
_HIT_EPS = 5e-4
_NORMAL_EPS = 5e-4


def _sphere_trace(
    shape: Shape,
    origins: Float[Tensor, "rays 3"],
    dirs: Float[Tensor, "rays 3"],
    steps: int,
) -> Tuple[Bool[Tensor, "rays"], Float[Tensor, "rays"]]:
    """Sphere tracing inside the bounding ball ``_BOUND_RADIUS``; returns hit mask and ray distance."""
    b = (origins * dirs).sum(-1)
    c = (origins * origins).sum(-1) - _BOUND_RADIUS**2
    disc = b * b - c
    root = disc.clamp(min=0.0).sqrt()
    t = (-b - root).clamp(min=0.0)
    t_far = -b + root
    hit = torch.zeros_like(t, dtype=torch.bool)
    idx = torch.nonzero((disc > 0) & (t_far > 0), as_tuple=True)[0]
    for _ in range(steps):
        if idx.numel() == 0:
            break
        t_active = t[idx]
        dist = shape.sdf(origins[idx] + t_active[:, None] * dirs[idx])
        converged = dist < _HIT_EPS
        hit[idx[converged]] = True
        t_next = t_active + dist
        t[idx] = torch.where(converged, t_active, t_next)
        idx = idx[~converged & (t_next < t_far[idx])]
    return hit, t


def _shade(shape: Shape, points: Float[Tensor, "k 3"]) -> Float[Tensor, "k 3"]:
    offsets = torch.eye(3, dtype=points.dtype) * _NORMAL_EPS
    grad = torch.stack(
        [shape.sdf(points + offsets[i]) - shape.sdf(points - offsets[i]) for i in range(3)], dim=-1
    )
    normals = F.normalize(grad, dim=-1)
    light = F.normalize(torch.tensor(LIGHT_DIRECTION, dtype=points.dtype), dim=0)
    lambert = (normals @ light).clamp(min=0.0)
    albedo = torch.tensor(shape.color, dtype=points.dtype)
    return albedo * (AMBIENT + DIFFUSE * lambert)[:, None]


@torch.no_grad()
def render_views(
    shape: Shape,
    camera_to_world: Float[Tensor, "n 3 4"],
    resolution: int,
    fov_degrees: float,
    background: Sequence[float] = (1.0, 1.0, 1.0),
    supersample: int = 2,
    steps: int = 96,
) -> Tuple[Float[Tensor, "n h w 3"], Float[Tensor, "n h w"], Float[Tensor, "n h w"]]:
    """:func:`render_shape` for a batch of cameras."""
    camera_to_world = camera_to_world[..., :3, :4].float()
    n = camera_to_world.shape[0]
    origins, dirs = pixel_rays(camera_to_world, resolution, fov_degrees, supersample)
    origins, dirs = origins.reshape(-1, 3), dirs.reshape(-1, 3)
    hit, t = _sphere_trace(shape, origins, dirs, steps)

    bg = torch.tensor(background, dtype=torch.float32)
    colour = bg.expand(hit.shape[0], 3).clone()
    hit_idx = torch.nonzero(hit, as_tuple=True)[0]
    colour[hit_idx] = _shade(shape, origins[hit_idx] + t[hit_idx, None] * dirs[hit_idx])

    s = supersample
    blocks = (n, resolution, s, resolution, s)
    rgb = colour.reshape(*blocks, 3).mean(dim=(2, 4))
    hit_f = hit.float().reshape(blocks)
    alpha = hit_f.mean(dim=(2, 4))
    depth_sum = torch.where(hit, t, torch.zeros_like(t)).reshape(blocks).sum(dim=(2, 4))
    hits = hit_f.sum(dim=(2, 4))
    depth = torch.where(hits > 0, depth_sum / hits.clamp(min=1.0), torch.full_like(depth_sum, math.inf))
    return rgb.clamp(0.0, 1.0), alpha, depth


def render_shape(
    shape: Shape,
    camera_to_world: Float[Tensor, "3 4"],
    resolution: int,
    fov_degrees: float,
    background: Sequence[float] = (1.0, 1.0, 1.0),
    supersample: int = 2,
    steps: int = 96,
) -> Tuple[Float[Tensor, "h w 3"], Float[Tensor, "h w"], Float[Tensor, "h w"]]:
    """Render ``shape`` from one camera by sphere tracing its SDF (pure torch, CPU).

    Lambertian shading under a fixed world-space light (``AMBIENT + DIFFUSE * max(n.l, 0)``) times the
    shape's albedo, ``supersample``² samples per pixel, composited over ``background``.

    Returns ``rgb`` in [0, 1], ``alpha`` (fraction of samples that hit, fractional at edges) and ``depth``:
    the mean distance along the ray from the camera centre over the hitting samples, ``inf`` where none hit.
    """
    rgb, alpha, depth = render_views(
        shape, camera_to_world[None], resolution, fov_degrees, background, supersample, steps
    )
    return rgb[0], alpha[0], depth[0]


@dataclass
class EmbeddedDatasetSpec:
    """Everything that determines the embedded data set (its cache key)."""

    objects_per_class: int = 16
    views_per_object: int = 8
    resolution: int = 64
    camera_radius: float = 2.5
    fov_degrees: float = 40.0
    seed: int = 0
    version: int = 1

    def __post_init__(self) -> None:
        for f in fields(self):
            caster = float if f.type in (float, "float") else int
            setattr(self, f.name, caster(getattr(self, f.name)))

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    def cache_key(self) -> str:
        payload = json.dumps(self.to_dict(), sort_keys=True)
        return hashlib.sha1(payload.encode("utf-8")).hexdigest()[:12]

    @property
    def focal(self) -> float:
        return focal_from_fov(self.resolution, self.fov_degrees)


def default_cache_dir() -> Path:
    """``$TRIPLANE_GAN_NS_CACHE``, else ``$XDG_CACHE_HOME/triplane_gan_ns``, else ``~/.cache/triplane_gan_ns``."""
    explicit = os.environ.get("TRIPLANE_GAN_NS_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        return Path(xdg).expanduser() / "triplane_gan_ns"
    return Path.home() / ".cache" / "triplane_gan_ns"


def _is_complete(root: Path, spec: EmbeddedDatasetSpec) -> bool:
    try:
        meta = json.loads((root / "dataset.json").read_text())
    except (OSError, ValueError):
        return False
    return meta.get("name") == DATASET_NAME and meta.get("spec") == spec.to_dict()


@contextlib.contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _write_dataset(root: Path, spec: EmbeddedDatasetSpec, progress: bool) -> None:
    generator = torch.Generator().manual_seed(spec.seed)
    res = spec.resolution
    intrinsics = f"{spec.focal:.6f} {res / 2.0:.6f} {res / 2.0:.6f} 0.\n0. 0. 0.\n1.\n{res} {res}\n"
    total = len(CLASS_NAMES) * spec.objects_per_class
    objects = []

    if progress:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        bar: Any = Progress(
            TextColumn("[progress.description]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
        )
    else:
        bar = contextlib.nullcontext()
    with bar:
        task = bar.add_task("Rendering embedded shapes", total=total) if progress else None
        for class_index, class_name in enumerate(CLASS_NAMES):
            for obj in range(spec.objects_per_class):
                shape = random_shape(class_index, generator)
                eyes = spec.camera_radius * uniform_sphere_directions(spec.views_per_object, generator)
                poses = look_at(eyes)
                rgb, _, _ = render_views(shape, poses, res, spec.fov_degrees)

                object_id = f"{class_name}_{obj:04d}"
                obj_dir = root / class_name / object_id
                (obj_dir / "rgb").mkdir(parents=True)
                (obj_dir / "pose").mkdir()
                images = (rgb * 255.0).round().clamp(0, 255).to(torch.uint8).numpy()
                bottom = np.array([[0.0, 0.0, 0.0, 1.0]])
                for view in range(spec.views_per_object):
                    Image.fromarray(images[view]).save(obj_dir / "rgb" / f"{view:06d}.png")
                    matrix = np.concatenate([poses[view].double().numpy(), bottom], axis=0)
                    write_matrix(obj_dir / "pose" / f"{view:06d}.txt", matrix)
                (obj_dir / "intrinsics.txt").write_text(intrinsics)
                (obj_dir / "shape.json").write_text(json.dumps(shape.to_dict(), indent=2) + "\n")
                objects.append(
                    {"class_name": class_name, "class_index": class_index, "path": f"{class_name}/{object_id}"}
                )
                if progress:
                    bar.advance(task)

    meta = {
        "name": DATASET_NAME,
        "spec": spec.to_dict(),
        "cache_key": spec.cache_key(),
        "class_names": list(CLASS_NAMES),
        "num_classes": len(CLASS_NAMES),
        "objects_per_class": spec.objects_per_class,
        "views_per_object": spec.views_per_object,
        "num_objects": total,
        "num_images": total * spec.views_per_object,
        "image_size": [res, res],
        "pose_convention": "opengl",
        "background": [1.0, 1.0, 1.0],
        "objects": objects,
    }
    (root / "dataset.json").write_text(json.dumps(meta, indent=2) + "\n")


def generate_embedded_dataset(dest: Path, spec: EmbeddedDatasetSpec, progress: bool = True) -> Path:
    """Render the data set described by ``spec`` into ``dest`` (deterministic given ``spec``).

    Rendering runs single-threaded: the per-step tensors are small, and intra-op threads only add overhead
    (a lot of it when other processes compete for the cores).  Returns at once if ``dest`` already holds
    this spec's data set.  Otherwise renders into the sibling
    ``<dest>.tmp-<pid>`` and renames it onto ``dest``, so ``dest`` is either absent or complete; when several
    processes race, one rename wins and the others discard their copy.
    """
    dest = Path(dest)
    if _is_complete(dest, spec):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f"{dest.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        tmp.mkdir()
        with _torch_threads(1):
            _write_dataset(tmp, spec, progress)
        install_dataset(tmp, dest, lambda root: _is_complete(root, spec))
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


def ensure_embedded_dataset(
    spec: Optional[EmbeddedDatasetSpec] = None, cache_dir: Optional[Path] = None, progress: bool = True
) -> Path:
    """Path of the cached embedded data set ``cache_dir / "embedded-shapes-<key>"``, generated if missing."""
    spec = spec if spec is not None else EmbeddedDatasetSpec()
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    dest = cache_dir / f"{DATASET_NAME}-{spec.cache_key()}"
    return generate_embedded_dataset(dest, spec, progress=progress)


def load_shape(object_dir: Path) -> Shape:
    """The ground-truth shape of one object directory."""
    return Shape.from_dict(json.loads((Path(object_dir) / "shape.json").read_text()))
