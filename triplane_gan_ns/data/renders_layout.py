"""Writing a dataset in the renders layout (``<object>/rgb/*.png`` + ``<object>/pose/*.txt``, camera-to-world
matrices as text, a ``dataset.json``), shared by the two ground-truth renderers: the embedded analytic shapes
(``embedded.py``) and real meshes (``meshes.py``).  ``renders_dataparser.py`` reads it.

* ``pixel_rays``: the rays through supersampled pixel positions of pinhole cameras, row-major;
* ``write_matrix``: a pose file;
* ``install_dataset``: move a finished temporary folder into place in one rename, also when another process
  installs the same dataset at the same moment or an incomplete one is in the way.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Callable, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

from triplane_gan_ns.cameras import focal_from_fov


def pixel_rays(
    camera_to_world: Float[Tensor, "n 3 4"], resolution: int, fov_degrees: float, supersample: int
) -> Tuple[Float[Tensor, "n rays 3"], Float[Tensor, "n rays 3"]]:
    """(origins, unit directions) through ``supersample``² evenly spaced points of every pixel, row-major
    (OpenGL cameras: looking down -z, y up)."""
    focal = focal_from_fov(resolution, fov_degrees)
    centre = resolution / 2.0
    samples = resolution * supersample
    coords = (torch.arange(samples, dtype=torch.float32) + 0.5) / supersample
    v, u = torch.meshgrid(coords, coords, indexing="ij")
    dirs_cam = torch.stack([(u - centre) / focal, -(v - centre) / focal, -torch.ones_like(u)], dim=-1)
    dirs_cam = F.normalize(dirs_cam.reshape(-1, 3), dim=-1)
    rotation = camera_to_world[:, :3, :3]
    dirs = torch.einsum("nij,rj->nri", rotation, dirs_cam)
    origins = camera_to_world[:, None, :3, 3].expand_as(dirs)
    return origins, dirs


def write_matrix(path: Path, matrix: np.ndarray) -> None:
    """A pose file: one row of the matrix per line, 9 significant digits."""
    lines = [" ".join(f"{float(v):.9g}" for v in row) for row in matrix]
    path.write_text("\n".join(lines) + "\n")


def install_dataset(tmp: Path, dest: Path, is_complete: Callable[[Path], bool]) -> None:
    """Rename the finished folder ``tmp`` to ``dest``.  If ``dest`` exists and ``is_complete(dest)`` (another
    process installed the same dataset first), ``tmp`` is left for the caller to remove; an incomplete ``dest``
    is moved aside and deleted first."""
    for _ in range(3):
        try:
            os.rename(tmp, dest)
            return
        except OSError:
            if is_complete(dest):
                return
            if dest.exists():
                stale = dest.parent / f"{dest.name}.old-{os.getpid()}"
                try:
                    os.rename(dest, stale)
                except OSError:
                    continue
                shutil.rmtree(stale, ignore_errors=True)
    os.rename(tmp, dest)
