"""``triplane-gan eval``: its options, passed to ``eval.evaluate.evaluate``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from triplane_gan_ns.eval.evaluate import evaluate


@dataclass
class Evaluate:
    """Evaluate a trained generator: FID, KID and IS on Inception-v3 (torch-fidelity; needs its weights file),
    FD- and KID-EffNetLite0 (offline), multi-view consistency, opacity statistics and, for data with known
    shapes, Chamfer distance, F-score and IoU to the true shapes after centre, scale and rotation alignment,
    and class-correctness.  Writes eval-step-<step>.json next to config.yml."""

    load_config: Path
    """config.yml of the training run."""
    metrics: str = "fid,kid,is"
    """Comma-separated metrics: fid, kid, is (Inception-v3), fd-effnetlite0, kid-effnetlite0 (offline), nfs
    (3DGP's non-flatness score of frontal depth maps); 'none' for geometry only."""
    num_gen: int = 50000
    """Generated images (class-balanced)."""
    num_nfs: int = 256
    """Latents rendered for the non-flatness score (classes drawn as in training)."""
    num_real: Optional[int] = None
    """Real images (default: all of --data)."""
    data: Optional[Path] = None
    """Real images: an ImageNet-style folder, prepare-dataset archive or renders folder (default: the run's data)."""
    checkpoint: Optional[Path] = None
    """Checkpoint to evaluate (default: the run's latest)."""
    inception_weights: Optional[Path] = None
    """torch-fidelity's Inception-v3 weights (default: torch hub's cache)."""
    geometry: bool = True
    """Also compute the geometry metrics."""
    num_geometry: int = 32
    """Latents for the geometry metrics (class-balanced)."""
    shape_resolution: int = 64
    """Lattice resolution of the generated density (its mesh and occupancy) for the comparison with known shapes."""
    shape_instances: int = 3
    """True shapes per class that each generated object is aligned to (the closest counts)."""
    shape_threshold: Optional[float] = None
    """Density at the generated surface (default: 10, EG3D's level, the same for every object)."""
    truncation: float = 1.0
    """Truncation psi of the generated images (1 = none, the standard for FID)."""
    batch_size: int = 32
    """Images per batch."""
    seed: int = 0
    """Seed of latents, cameras, the real subset and KID's subsets."""
    kid_subset_size: int = 1000
    """Samples per KID subset (fewer when fewer images)."""
    per_class: bool = False
    """Also FID, KID, FD- and KID-EffNetLite0 per class (``<metric>/<class>``): generated images of a class against
    real images of that class; one Fréchet distance per class, so slow for many classes."""
    output: Optional[Path] = None
    """JSON file for the results (default: eval-step-<step>.json next to config.yml)."""
    device: str = "auto"
    """cpu, cuda (or cuda:N), or auto (cuda when available)."""

    def main(self) -> None:
        evaluate(
            self.load_config,
            metrics=self.metrics,
            num_gen=self.num_gen,
            num_nfs=self.num_nfs,
            num_real=self.num_real,
            data=self.data,
            checkpoint=self.checkpoint,
            inception_weights=self.inception_weights,
            geometry=self.geometry,
            num_geometry=self.num_geometry,
            shape_resolution=self.shape_resolution,
            shape_instances=self.shape_instances,
            shape_threshold=self.shape_threshold,
            truncation=self.truncation,
            batch_size=self.batch_size,
            seed=self.seed,
            kid_subset_size=self.kid_subset_size,
            per_class=self.per_class,
            output=self.output,
            device=self.device,
        )
