"""Dataparser for ImageNet-style class folders (``ROOT/train/<class>/*.JPEG`` or ``ROOT/<class>/*``) and for
the compact archives written by ``triplane-gan prepare-dataset`` (a folder holding ``manifest.json``).

Photos carry no poses: every image gets the same frontal camera (on +x, looking at the origin); the generator
samples its own cameras during training.  The class index of a folder is its position in the sorted list of
the selected class folder names, so it does not depend on the order of the file system or of ``classes``.
If the root holds ImageNet's ``LOC_synset_mapping.txt`` (``n01440764 tench, Tinca tinca``), class names are
the first human-readable synonym and the folder names (WordNet ids) are kept as ``class_ids``.

This module is imported when nerfstudio discovers dataparsers, so it must not import
``nerfstudio.data.datamanagers`` (which imports the discovery itself).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Sequence, Tuple, Type

import numpy as np
import torch
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.data.dataparsers.base_dataparser import DataParser, DataParserConfig, DataparserOutputs
from nerfstudio.data.scene_box import SceneBox
from nerfstudio.plugins.registry_dataparser import DataParserSpecification
from nerfstudio.utils.rich_utils import CONSOLE

from triplane_gan_ns.data import archive
from triplane_gan_ns.errors import DataNotFound, UserError
from triplane_gan_ns.cameras import make_cameras
from triplane_gan_ns.cameras import look_at

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
SYNSET_MAPPING = "LOC_synset_mapping.txt"


@dataclass
class ImageFolderDataParserConfig(DataParserConfig):
    """Unposed photos in one folder per class (ImageNet layout), or an archive from ``prepare-dataset``."""

    _target: Type = field(default_factory=lambda: ImageFolderDataParser)
    data: Path = Path()
    """ROOT/train/<class>/*.JPEG, ROOT/<class>/*, or an archive folder (holds manifest.json)."""
    classes: Tuple[str, ...] = ()
    """Train on these classes only (folder names such as n01440764, or names from LOC_synset_mapping.txt);
    empty = all classes.  Labels are positions in the sorted list of the selected folder names."""
    max_images_per_class: int = 0
    """Use at most this many images of each class (the first in sorted file order); 0 = all."""
    background: Tuple[float, float, float] = (1.0, 1.0, 1.0)
    """Colour composited behind transparent pixels."""
    image_size: int = 256
    """Nominal size of the photos for their (shared, frontal) camera; files are not opened to read sizes."""
    camera_radius: float = 2.5
    """Distance of the frontal camera from the scene centre."""
    fov_degrees: float = 40.0
    """Field of view of the frontal camera."""
    scene_bound: float = 1.0
    """Half side of the scene box."""


def read_synset_mapping(path: Path) -> Dict[str, str]:
    """``{wnid: description}`` from ImageNet's ``LOC_synset_mapping.txt`` (``n01440764 tench, Tinca tinca``)."""
    mapping = {}
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        wnid, _, description = line.strip().partition(" ")
        if wnid:
            mapping[wnid] = description.strip() or wnid
    return mapping


def short_name(description: str) -> str:
    """First synonym of a synset description: ``tench, Tinca tinca`` -> ``tench``."""
    return description.split(",")[0].strip()


def class_folder_root(root: Path) -> Path:
    """The folder that holds the class folders: ``root/train`` when it exists, else ``root``."""
    return root / "train" if (root / "train").is_dir() else root


def list_class_folders(folder: Path) -> List[str]:
    with os.scandir(folder) as entries:
        return sorted(e.name for e in entries if not e.name.startswith(".") and e.is_dir())


def list_images(folder: Path) -> List[str]:
    """Sorted names of the files with an image suffix (the files are not opened)."""
    with os.scandir(folder) as entries:
        return sorted(
            e.name
            for e in entries
            if not e.name.startswith(".") and os.path.splitext(e.name)[1].lower() in IMAGE_SUFFIXES and e.is_file()
        )


def select_classes(
    requested: Sequence[str], ids: Sequence[str], descriptions: Sequence[str], root: Path
) -> List[int]:
    """Positions (sorted) of the requested classes, named by folder name, full description or first synonym."""
    if not requested:
        return list(range(len(ids)))
    lookup: Dict[str, List[int]] = {}
    for i, (cid, description) in enumerate(zip(ids, descriptions)):
        for key in {cid, description, short_name(description)}:
            lookup.setdefault(key, []).append(i)
    chosen = set()
    for name in requested:
        matches = lookup.get(name, [])
        if not matches:
            examples = [cid if short_name(d) == cid else f"{cid} ({short_name(d)})" for cid, d in zip(ids, descriptions)]
            known = ", ".join(examples[:5]) + (", ..." if len(ids) > 5 else "")
            raise UserError(f"no class named {name!r} in {root} ({len(ids)} classes: {known})")
        if len({ids[i] for i in matches}) > 1:
            raise UserError(
                f"class name {name!r} is ambiguous in {root} ({', '.join(ids[i] for i in matches)}); use the folder name"
            )
        chosen.add(matches[0])
    return sorted(chosen)


class ImageFolderDataParser(DataParser):
    config: ImageFolderDataParserConfig

    def _root(self) -> Path:
        root = Path(self.config.data)
        if str(self.config.data) in ("", "."):
            raise UserError("no data folder given; pass --data with ROOT/<class>/*.JPEG or a prepare-dataset archive")
        if not root.is_dir():
            raise DataNotFound(
                f"data folder {root} does not exist; pass --data with ROOT/<class>/*.JPEG or an archive", root
            )
        return root

    def _generate_dataparser_outputs(self, split: str = "train", **kwargs) -> DataparserOutputs:
        root = self._root()
        if archive.is_archive(root):
            return self._archive_outputs(root)
        if (root / archive.PROGRESS).exists():
            raise UserError(f"archive {root} is unfinished; re-run triplane-gan prepare-dataset with the same options")
        return self._folder_outputs(root)

    def _folder_outputs(self, root: Path) -> DataparserOutputs:
        folder = class_folder_root(root)
        ids = list_class_folders(folder)
        if not ids:
            raise UserError(f"no class folders in {folder}; expected {folder}/<class>/*.JPEG")
        descriptions = self._descriptions(root, folder, ids)
        chosen = select_classes(self.config.classes, ids, descriptions, root)
        filenames: List[Path] = []
        labels: List[int] = []
        class_ids: List[str] = []
        class_names: List[str] = []
        empty: List[str] = []
        for index in chosen:
            names = list_images(folder / ids[index])
            if self.config.max_images_per_class > 0:
                names = names[: self.config.max_images_per_class]
            if not names:
                empty.append(ids[index])
                continue
            class_folder = folder / ids[index]
            filenames.extend(class_folder / name for name in names)
            labels.extend([len(class_ids)] * len(names))
            class_ids.append(ids[index])
            class_names.append(short_name(descriptions[index]))
        if not filenames:
            raise UserError(
                f"no images found under {folder}; expected {folder}/<class>/*.JPEG "
                f"(image suffixes: {', '.join(sorted(IMAGE_SUFFIXES))})"
            )
        if empty:
            CONSOLE.print(f"[yellow]Skipping {len(empty)} class folder(s) without images: {', '.join(empty[:5])}")
        return self._outputs(filenames, labels, class_ids, class_names, root, self.config.image_size, {})

    def _descriptions(self, root: Path, folder: Path, ids: List[str]) -> List[str]:
        for candidate in (root / SYNSET_MAPPING, folder / SYNSET_MAPPING):
            if candidate.is_file():
                mapping = read_synset_mapping(candidate)
                return [mapping.get(cid, cid) for cid in ids]
        return list(ids)

    def _archive_outputs(self, root: Path) -> DataparserOutputs:
        manifest = archive.read_manifest(root)
        ids, names = archive.read_class_index(root)
        all_labels = archive.read_labels(root, manifest)
        if all_labels.size == 0:
            raise UserError(f"archive {root} holds no images; re-run triplane-gan prepare-dataset on a folder with images")
        chosen = select_classes(self.config.classes, ids, names, root)
        new_label = np.full(len(ids), -1, dtype=np.int64)
        new_label[chosen] = np.arange(len(chosen))
        rows = np.flatnonzero(new_label[all_labels] >= 0)
        if self.config.max_images_per_class > 0:
            order = np.argsort(all_labels[rows], kind="stable")
            sorted_labels = all_labels[rows][order]
            starts = np.searchsorted(sorted_labels, sorted_labels, side="left")
            keep = (np.arange(len(order)) - starts) < self.config.max_images_per_class
            rows = np.sort(rows[order[keep]])
        present = np.unique(all_labels[rows])
        new_label[:] = -1
        new_label[present] = np.arange(len(present))
        shard_paths = [root / shard["images"] for shard in manifest["shards"]]
        shard_of_row = np.repeat(np.arange(len(shard_paths)), [s["count"] for s in manifest["shards"]])
        filenames = [shard_paths[s] for s in shard_of_row[rows]]
        metadata = {
            "archive": {
                "root": str(root),
                "shards": [s["images"] for s in manifest["shards"]],
                "counts": [s["count"] for s in manifest["shards"]],
                "resolution": manifest["resolution"],
            },
            "archive_rows": torch.from_numpy(rows.astype(np.int64)),
        }
        return self._outputs(
            filenames,
            new_label[all_labels[rows]].tolist(),
            [ids[i] for i in present],
            [names[i] for i in present],
            root,
            int(manifest["resolution"]),
            metadata,
        )

    def _outputs(
        self,
        filenames: List[Path],
        labels: List[int],
        class_ids: List[str],
        class_names: List[str],
        root: Path,
        image_size: int,
        extra: Dict,
    ) -> DataparserOutputs:
        b = self.config.scene_bound
        return DataparserOutputs(
            image_filenames=filenames,
            cameras=frontal_cameras(len(filenames), image_size, self.config.camera_radius, self.config.fov_degrees),
            alpha_color=torch.tensor(self.config.background, dtype=torch.float32),
            scene_box=SceneBox(aabb=torch.tensor([[-b, -b, -b], [b, b, b]], dtype=torch.float32)),
            metadata={
                "labels": torch.tensor(labels, dtype=torch.long),
                "class_names": class_names,
                "class_ids": class_ids,
                "root": str(root),
                **extra,
            },
        )


def frontal_cameras(num: int, image_size: int, radius: float, fov_degrees: float) -> Cameras:
    """``num`` copies of one camera on +x looking at the origin (the pose is shared, not stored ``num`` times)."""
    c2w = look_at(torch.tensor([[radius, 0.0, 0.0]]))
    return make_cameras(c2w.expand(num, 3, 4), image_size, fov_degrees)


imagenet_dataparser = DataParserSpecification(
    config=ImageFolderDataParserConfig(),
    description="Unposed photos in class folders (ImageNet layout) or a triplane-gan prepare-dataset archive.",
)
