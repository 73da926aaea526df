"""Using a trained generator: latents from (class, seed), renders from any camera, meshes and density volumes.

* ``latents.py``: a ``Latent`` is (class, seed, truncation psi) mapped through the EMA generator, or the ``ws``
  of a saved latent file;
* ``video.py``: ``triplane-gan render``: view grids, orbit videos, depth and opacity images;
* ``mesh.py``: ``triplane-gan export-mesh``: marching cubes on the triplane's density, coloured vertices or a baked
  texture.
"""

from __future__ import annotations

import os
from pathlib import Path

from triplane_gan_ns.errors import UserError


def check_writable_dir(directory: Path, create: bool) -> None:
    """A UserError unless files can be created in ``directory`` (made first, with parents, if ``create``)."""
    directory = Path(directory)
    if not create and not directory.is_dir():
        problem = "is not a folder" if directory.exists() else "does not exist"
        raise UserError(f"output folder {directory} {problem}; create it or choose another output path")
    try:
        if create:
            directory.mkdir(parents=True, exist_ok=True)
        probe = directory / f".write-test.{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        reason = exc.strerror or exc
        raise UserError(f"cannot write to {directory} ({reason}); choose a writable output folder") from None


def check_creatable_dir(directory: Path) -> None:
    """A UserError unless ``directory`` exists and is writable, or can be created (its nearest existing parent is
    a writable folder); creates nothing."""
    existing = Path(directory).absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    check_writable_dir(existing, create=False)
