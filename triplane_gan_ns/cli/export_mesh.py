"""``triplane-gan export-mesh``: its options, passed to ``export.mesh.export_mesh``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Optional

import tyro

from triplane_gan_ns.export.mesh import DEFAULT_TEXTURE_SIZE, export_mesh


@dataclass
class ExportMesh:
    """Export one generated object as a mesh (.ply, .obj or .glb), by marching cubes on the density of its
    triplane over the scene box, coloured at its vertices or, with --texture, by a baked texture (.glb, or .obj
    with .mtl and .png beside it); optionally also the density volume (.npy or .mrc).

    The mesh is in world units with z up; only the largest --keep-components connected components are kept, and
    --max-faces simplifies it.  The surface level is chosen where renders of the object become opaque and
    printed, unless --density-threshold fixes it.
    """

    load_config: Path
    """config.yml of the training run."""
    output: Path
    """Mesh file to write: .ply, .obj or .glb."""
    checkpoint: Optional[Path] = None
    """Checkpoint to load (default: the run's latest)."""
    class_: Annotated[str, tyro.conf.arg(name="class")] = "0"
    """Class, by index or name."""
    seed: int = 0
    """Seed of the latent."""
    truncation: float = 0.7
    """Truncation psi (1 = none)."""
    latent: Optional[Path] = None
    """A saved latent file (.pt with ws and class_index) to export instead of --class/--seed."""
    resolution: int = 256
    """Lattice points per axis (8..1024); memory and time grow with its cube."""
    density_threshold: Optional[float] = None
    """Surface level of the density (per world unit; EG3D uses 10); None: automatic, the level where renders of
    the object become opaque (printed)."""
    keep_components: int = 1
    """Keep this many connected components with the most faces (0 = all): removes floaters."""
    max_faces: int = 0
    """Simplify the mesh to about this many faces by quadric decimation (0 = keep all, else at least 4)."""
    texture: bool = False
    """UV-unwrap the mesh and bake the field's colour into a texture instead of vertex colours (.glb or .obj)."""
    texture_size: int = DEFAULT_TEXTURE_SIZE
    """Side of the square texture in texels (64..4096)."""
    volume: Optional[Path] = None
    """Also write the density lattice here: .npy ([x, y, z] float32) or .mrc."""
    chunk_size: int = 1 << 18
    """Points queried at once."""
    device: str = "auto"
    """cpu, cuda (or cuda:N), or auto (cuda when available)."""

    def main(self) -> None:
        export_mesh(
            self.load_config,
            self.latent if self.latent is not None else (self.class_, self.seed),
            self.output,
            resolution=self.resolution,
            density_threshold=self.density_threshold,
            keep_components=self.keep_components,
            max_faces=self.max_faces,
            texture=self.texture,
            texture_size=self.texture_size,
            volume=self.volume,
            chunk_size=self.chunk_size,
            truncation=self.truncation,
            checkpoint=self.checkpoint,
            device=self.device,
        )
