"""``triplane-gan prepare-dataset SRC DEST``: its options, passed to ``data.prepare.prepare_dataset``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Tuple

import tyro

from triplane_gan_ns.data.prepare import DEFAULT_WORKERS, Layout, prepare_dataset


@dataclass
class PrepareDataset:
    """Decode, centre-crop and resize a folder of photos once into shards of uint8 arrays for fast training.

    SRC is ImageNet-style (SRC/train/<class>/*.JPEG or SRC/<class>/*) or rendered views
    (SRC/<category>/<object>/rgb/*.png).  Train on the result with
    `ns-train triplane-gan triplane-gan-imagenet --data DEST`.  Re-running after an interruption resumes.
    """

    src: tyro.conf.Positional[Annotated[Path, tyro.conf.arg(metavar="SRC")]]
    """Folder of source images."""
    dest: tyro.conf.Positional[Annotated[Path, tyro.conf.arg(metavar="DEST")]]
    """Archive folder to create (or to finish, after an interrupted run)."""
    resolution: int = 256
    """Side of the stored square images."""
    workers: int = DEFAULT_WORKERS
    """Decoding processes (0 decodes in this process)."""
    shard_size: int = 1000
    """Source files per shard."""
    layout: Layout = "auto"
    """Folder layout of SRC; auto picks renders when SRC/<category>/<object>/rgb exists."""
    classes: Tuple[str, ...] = ()
    """Only these classes (imagenet layout; folder names or names from LOC_synset_mapping.txt); empty = all."""
    max_images_per_class: int = 0
    """At most this many images per class (imagenet layout); 0 = all."""
    background: Tuple[float, float, float] = (1.0, 1.0, 1.0)
    """Colour composited behind transparent pixels."""

    def main(self) -> None:
        prepare_dataset(
            self.src,
            self.dest,
            resolution=self.resolution,
            workers=self.workers,
            shard_size=self.shard_size,
            layout=self.layout,
            classes=self.classes,
            max_images_per_class=self.max_images_per_class,
            background=self.background,
        )
