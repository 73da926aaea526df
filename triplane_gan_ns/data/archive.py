"""The compact archive written by ``triplane-gan prepare-dataset``: decoded images in uint8 shards.

Layout of an archive folder::

    images-00000.npy     uint8 [N, R, R, 3], centre-cropped and resized photos
    labels-00000.npy     int64 [N], class index of each image
    ...
    class_index.json     {"0": {"id": "n01440764", "name": "tench"}, ...}
    manifest.json        resolution, shard list with counts, skipped files; written last

A folder is an archive when it holds ``manifest.json``.  Shards are read memory-mapped, so opening an archive
of any size is instant and images are copied out of the page cache without decoding.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import numpy.typing as npt
from jaxtyping import Int64, UInt8

from triplane_gan_ns.errors import UserError

MANIFEST = "manifest.json"
CLASS_INDEX = "class_index.json"
PROGRESS = ".progress.json"
FORMAT = "triplane-gan-archive"
VERSION = 1


def shard_names(index: int) -> tuple[str, str]:
    """File names of the images and labels of shard ``index``."""
    return f"images-{index:05d}.npy", f"labels-{index:05d}.npy"


def is_archive(root: Path) -> bool:
    return (Path(root) / MANIFEST).is_file()


def read_manifest(root: Path) -> Dict:
    """The manifest of the archive in ``root``, checked for the format and the presence of its shards."""
    root = Path(root)
    try:
        manifest = json.loads((root / MANIFEST).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"cannot read archive manifest {root / MANIFEST} ({exc}); re-run triplane-gan prepare-dataset")
    if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
        raise UserError(
            f"{root / MANIFEST} is not a {FORMAT} version {VERSION} manifest; re-run triplane-gan prepare-dataset"
        )
    for shard in manifest["shards"]:
        for name in (shard["images"], shard["labels"]):
            if not (root / name).is_file():
                raise UserError(f"archive {root} lacks {name} listed in its manifest; re-run triplane-gan prepare-dataset")
    return manifest


def read_class_index(root: Path) -> tuple[List[str], List[str]]:
    """(class ids, class names) of an archive, in label order."""
    index = json.loads((Path(root) / CLASS_INDEX).read_text())
    entries = [index[str(i)] for i in range(len(index))]
    return [e["id"] for e in entries], [e["name"] for e in entries]


def load_shard(root: Path, name: str, mmap_mode: Optional[str] = None) -> np.ndarray:
    """One ``.npy`` shard of an archive; a truncated or damaged file is a UserError saying how to repair it."""
    try:
        return np.load(Path(root) / name, mmap_mode=mmap_mode, allow_pickle=False)
    except (ValueError, EOFError, OSError) as exc:
        problem = "is truncated" if isinstance(exc, (EOFError, ValueError)) else f"cannot be read ({exc.strerror or exc})"
        raise UserError(f"archive {root} shard {name} {problem}; re-run triplane-gan prepare-dataset") from None


def read_labels(root: Path, manifest: Dict) -> Int64[np.ndarray, "num"]:
    """Labels of every image of the archive, in archive order (all shards concatenated)."""
    parts = [load_shard(root, shard["labels"]) for shard in manifest["shards"]]
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, dtype=np.int64)


class ArchiveImages:
    """Random access to the images of an archive by global row (shards concatenated in manifest order).

    Shards are memory-mapped on first use in each process; pickling (DataLoader workers started with
    ``spawn``) sends only the file names, never the mapped arrays.
    """

    def __init__(self, root: Path, shard_files: List[str], shard_counts: List[int]) -> None:
        self.root = Path(root)
        self.shard_files = list(shard_files)
        self.offsets = np.concatenate([[0], np.cumsum(shard_counts)]).astype(np.int64)
        self._maps: List[Optional[np.ndarray]] = [None] * len(self.shard_files)

    @classmethod
    def from_manifest(cls, root: Path, manifest: Dict) -> "ArchiveImages":
        shards = manifest["shards"]
        return cls(root, [s["images"] for s in shards], [s["count"] for s in shards])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def _shard(self, index: int) -> np.ndarray:
        if self._maps[index] is None:
            self._maps[index] = load_shard(self.root, self.shard_files[index], mmap_mode="r")
        return self._maps[index]  # type: ignore[return-value]

    def __getitem__(self, row: int) -> UInt8[npt.NDArray, "res res 3"]:
        shard = int(np.searchsorted(self.offsets, row, side="right") - 1)
        return np.array(self._shard(shard)[row - self.offsets[shard]])

    def __getstate__(self) -> Dict:
        return {**self.__dict__, "_maps": [None] * len(self.shard_files)}
