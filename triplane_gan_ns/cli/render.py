"""``triplane-gan render``: its options, passed to ``export.video.render_latents``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple

from triplane_gan_ns.export.video import render_latents
from triplane_gan_ns.latents import latent_specs


@dataclass
class RenderLatents:
    """Render generated objects: a grid of views, an orbit video (GIF, and MP4 when PyAV is installed), depth
    and opacity images per (class, seed), as <name>_grid.png, _depth.png, _opacity.png, _orbit.gif, _orbit.mp4.

    At the model's output resolution (default) images go through super-resolution as in training, and depth
    and opacity are at the neural (volume-rendering) resolution; any other --resolution renders raw volume
    rendering at that size (no super-resolution).  Camera radius and field of view default to the model's pose
    sampler.  The orbit has --frames + 1 frames: azimuths k*360/frames for k = 0..frames, so its last frame
    repeats the first.
    """

    load_config: Path
    """config.yml of the training run."""
    output_dir: Path
    """Folder for the images and videos (created if missing)."""
    checkpoint: Optional[Path] = None
    """Checkpoint to load (default: the run's latest)."""
    classes: Tuple[str, ...] = ("0",)
    """Classes to render, by index or name."""
    seeds: Tuple[int, ...] = (0,)
    """Seeds of the latents; every class is rendered with every seed."""
    truncation: float = 0.7
    """Truncation psi (1 = none, smaller = closer to the class average)."""
    latent: Tuple[Path, ...] = ()
    """Saved latent files (.pt with ws and class_index) to render instead of --classes/--seeds."""
    radius: Optional[float] = None
    """Camera distance from the scene centre (default: the model's pose sampler)."""
    fov_degrees: Optional[float] = None
    """Field of view (default: the model's pose sampler)."""
    elevation_degrees: float = 20.0
    """Camera elevation above the horizontal plane (world z is up)."""
    views: int = 8
    """Azimuths in the grid, depth and opacity images."""
    frames: int = 48
    """Orbit frames per full turn; the video has frames + 1 (the last repeats the first)."""
    fps: int = 24
    """Frame rate of the orbit video."""
    resolution: Optional[int] = None
    """Image side (default: the model's output resolution); any other value renders raw, without super-resolution."""
    device: str = "auto"
    """cpu, cuda (or cuda:N), or auto (cuda when available)."""

    def main(self) -> None:
        render_latents(
            self.load_config,
            latent_specs(self.classes, self.seeds, self.latent),
            self.output_dir,
            truncation=self.truncation,
            views=self.views,
            frames=self.frames,
            fps=self.fps,
            elevation_degrees=self.elevation_degrees,
            radius=self.radius,
            fov_degrees=self.fov_degrees,
            resolution=self.resolution,
            checkpoint=self.checkpoint,
            device=self.device,
        )
