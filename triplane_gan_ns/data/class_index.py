"""The class index of a training run, and the training set as it looks without its images.

``class_index.json`` sits next to a run's ``config.yml``: the stable label -> class mapping and the image
resolution the generator was trained with, written when training starts.  With ``config.yml`` and a checkpoint
it is all a trained generator needs: the tools read it instead of the data, and when a run's data folder is gone
the datamanager builds ``ClassIndexDataset`` from it, so that nerfstudio's viewer (which asks the pipeline for a
training set) can still show the generator.

Not to be confused with the ``class_index.json`` of a prepared archive (``archive.py``), which maps the
archive's classes for the dataparser.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Sequence

import torch
from jaxtyping import Float
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.data.dataparsers.base_dataparser import DataparserOutputs
from nerfstudio.data.datasets.base_dataset import InputDataset
from nerfstudio.data.scene_box import SceneBox
from torch import Tensor

from triplane_gan_ns.cameras import make_cameras
from triplane_gan_ns.errors import UserError
from triplane_gan_ns.fileio import atomic_write

CLASS_INDEX = "class_index.json"


def write_class_index(run_dir: Path, resolution: int, class_ids: Sequence[str], class_names: Sequence[str]) -> Path:
    """``class_index.json`` of a run: the stable label -> class mapping and the image resolution, everything
    needed (with config.yml and a checkpoint) to use the generator without the data."""
    index = {
        "resolution": int(resolution),
        "classes": [{"index": i, "id": class_ids[i], "name": n} for i, n in enumerate(class_names)],
    }
    path = Path(run_dir) / CLASS_INDEX
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(index, indent=1)))
    return path


def read_class_index(run_dir: Path) -> Dict[str, Any]:
    """The ``class_index.json`` of a run, with a one-line error when it is missing."""
    path = Path(run_dir) / CLASS_INDEX
    if not path.is_file():
        raise UserError(f"{path} is missing; it is written when training starts")
    return json.loads(path.read_text())


def class_index_outputs(index: Dict[str, Any], scene_box: SceneBox) -> DataparserOutputs:
    """Dataparser outputs without images from a class index (``read_class_index``): ``metadata`` holds
    ``class_names``, ``class_ids``, ``labels`` (empty) and ``resolution``, what the model is built from."""
    resolution = int(index["resolution"])
    classes = sorted(index["classes"], key=lambda c: c["index"])
    return DataparserOutputs(
        image_filenames=[],
        cameras=make_cameras(torch.zeros(0, 3, 4), resolution, fov_degrees=40.0),
        scene_box=scene_box,
        metadata={
            "class_names": [c["name"] for c in classes],
            "class_ids": [c.get("id", c["name"]) for c in classes],
            "labels": torch.zeros(0, dtype=torch.long),
            "resolution": resolution,
        },
    )


class ClassIndexDataset(InputDataset):
    """The training set of a run whose images are not here (``class_index_outputs``): its classes and resolution,
    no labelled images, and blank views at the cameras given to ``set_views`` (nerfstudio's viewer draws the
    training cameras with their images).  ``dataset[i]`` is ``{"image_idx": i, "image": [R, R, 3] zeros}``.
    """

    def __init__(self, dataparser_outputs: DataparserOutputs) -> None:
        super().__init__(dataparser_outputs)
        self.resolution = int(self.metadata["resolution"])
        self.labels: Tensor = self.metadata["labels"]
        self.class_names: List[str] = list(self.metadata["class_names"])

    def set_views(self, cameras: Cameras) -> None:
        """Show these cameras (one blank view each) as the training views."""
        self.cameras = cameras

    def __len__(self) -> int:
        return len(self.cameras)

    def blank(self) -> Float[Tensor, "res res 3"]:
        return torch.zeros(self.resolution, self.resolution, 3)

    def __getitem__(self, image_idx: int) -> Dict[str, Any]:
        return {"image_idx": image_idx, "image": self.blank()}
