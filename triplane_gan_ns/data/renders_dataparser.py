"""Dataparser for ShapeNet-style renders: ``ROOT/<category>/<object>/rgb/*.png`` with per-view poses.

This is the SRN / EG3D-cars layout (``pose/NNNNNN.txt`` holds a 4x4 camera-to-world matrix,
``intrinsics.txt`` starts with ``f cx cy``) and the layout of the embedded default data, which is generated
and used when no ``data`` folder is given.  Categories are the classes (sorted by name).  Poses are not used
for training (the generator samples its own cameras); they are kept for evaluation and the viewer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Literal, Tuple, Type

import numpy as np
import torch
from nerfstudio.cameras.cameras import Cameras, CameraType
from nerfstudio.data.dataparsers.base_dataparser import DataParser, DataParserConfig, DataparserOutputs
from nerfstudio.data.scene_box import SceneBox
from nerfstudio.plugins.registry_dataparser import DataParserSpecification

from triplane_gan_ns.errors import DataNotFound, UserError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}


@dataclass
class RendersDataParserConfig(DataParserConfig):
    """Rendered views of objects grouped by category; empty ``data`` = the embedded analytic shapes."""

    _target: Type = field(default_factory=lambda: RendersDataParser)
    data: Path = Path()
    """Root folder with one sub-folder per category; leave empty for the embedded default data."""
    pose_convention: Literal["opengl", "opencv"] = "opengl"
    """Axes of the pose files: nerfstudio/OpenGL (camera looks down -z; our embedded data) or OpenCV (SRN)."""
    scene_bound: float = 1.0
    """Half side of the scene box."""
    background: Tuple[float, float, float] = (1.0, 1.0, 1.0)
    """Colour composited behind transparent pixels."""


def _read_pose(path: Path) -> np.ndarray:
    values = np.loadtxt(path, dtype=np.float64).reshape(-1)
    if values.size not in (12, 16):
        raise UserError(f"pose file {path} holds {values.size} numbers, not a 3x4 or 4x4 matrix; fix or remove it")
    return values[:12].reshape(3, 4)


def _read_intrinsics(path: Path) -> tuple[float, float, float]:
    first = path.read_text().split("\n")[0].split()
    f, cx, cy = (float(v) for v in first[:3])
    return f, cx, cy


class RendersDataParser(DataParser):
    config: RendersDataParserConfig

    def _root(self) -> Path:
        if str(self.config.data) in ("", "."):
            from triplane_gan_ns.data.embedded import ensure_embedded_dataset

            return ensure_embedded_dataset()
        root = Path(self.config.data)
        if not root.is_dir():
            raise DataNotFound(
                f"data folder {root} does not exist; pass --data with a folder of <category>/<object>/rgb", root
            )
        return root

    def _generate_dataparser_outputs(self, split: str = "train", **kwargs) -> DataparserOutputs:
        root = self._root()
        categories = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        filenames: List[Path] = []
        labels: List[int] = []
        poses: List[np.ndarray] = []
        intrinsics: List[tuple] = []
        class_names: List[str] = []
        for category in categories:
            objects = sorted(p for p in (root / category).iterdir() if (p / "rgb").is_dir())
            if not objects:
                continue
            label = len(class_names)
            class_names.append(category)
            for obj in objects:
                images = sorted(p for p in (obj / "rgb").iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
                intr_file = obj / "intrinsics.txt"
                for image in images:
                    pose_file = obj / "pose" / (image.stem + ".txt")
                    filenames.append(image)
                    labels.append(label)
                    poses.append(_read_pose(pose_file) if pose_file.exists() else np.eye(4)[:3])
                    intrinsics.append(_read_intrinsics(intr_file) if intr_file.exists() else (0.0, 0.0, 0.0))
        if not filenames:
            raise UserError(
                f"no images found under {root}; expected {root}/<category>/<object>/rgb/*.png "
                f"(image suffixes: {', '.join(sorted(IMAGE_SUFFIXES))})"
            )
        c2w = torch.from_numpy(np.stack(poses)).float()
        if self.config.pose_convention == "opencv":
            c2w[:, :, 1:3] *= -1
        intr = torch.tensor(intrinsics, dtype=torch.float32)
        size = torch.tensor(
            [_image_size(f) for f in filenames[:1]] * len(filenames), dtype=torch.long
        )  # views of one data set share a size
        focal = torch.where(intr[:, 0] > 0, intr[:, 0], size[:, 0].float())
        cx = torch.where(intr[:, 1] > 0, intr[:, 1], size[:, 0].float() / 2)
        cy = torch.where(intr[:, 2] > 0, intr[:, 2], size[:, 1].float() / 2)
        cameras = Cameras(
            camera_to_worlds=c2w,
            fx=focal[:, None],
            fy=focal[:, None],
            cx=cx[:, None],
            cy=cy[:, None],
            width=size[:, :1],
            height=size[:, 1:],
            camera_type=CameraType.PERSPECTIVE,
        )
        b = self.config.scene_bound
        return DataparserOutputs(
            image_filenames=filenames,
            cameras=cameras,
            alpha_color=torch.tensor(self.config.background, dtype=torch.float32),
            scene_box=SceneBox(aabb=torch.tensor([[-b, -b, -b], [b, b, b]], dtype=torch.float32)),
            metadata={"labels": torch.tensor(labels, dtype=torch.long), "class_names": class_names, "root": str(root)},
        )


def _image_size(path: Path) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as im:
        return im.size


renders_dataparser = DataParserSpecification(
    config=RendersDataParserConfig(),
    description="Rendered views in <category>/<object>/rgb folders (ShapeNet/SRN layout); no data = embedded shapes.",
)
