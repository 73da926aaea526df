"""Dataset of class-labelled photos, decoded to square RGB images of one resolution."""

from __future__ import annotations

from typing import Dict

import numpy as np
import numpy.typing as npt
import torch
from nerfstudio.data.dataparsers.base_dataparser import DataparserOutputs
from nerfstudio.data.datasets.base_dataset import InputDataset
from PIL import Image, ImageOps


def load_square_rgb(path, resolution: int, background=(1.0, 1.0, 1.0)) -> npt.NDArray[np.uint8]:
    """Decode any PIL-readable image: EXIF orientation applied, alpha composited over ``background``,
    grayscale/CMYK/palette converted to RGB, centre-cropped to a square and resized to ``resolution``²."""
    with Image.open(path) as im:
        im = ImageOps.exif_transpose(im)
        if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
            im = im.convert("RGBA")
            bg = Image.new("RGBA", im.size, tuple(int(round(255 * c)) for c in background) + (255,))
            im = Image.alpha_composite(bg, im)
        im = im.convert("RGB")
        w, h = im.size
        side = min(w, h)
        left, top = (w - side) // 2, (h - side) // 2
        im = im.crop((left, top, left + side, top + side))
        if side != resolution:
            im = im.resize((resolution, resolution), resample=Image.Resampling.LANCZOS)
        return np.asarray(im, dtype=np.uint8)


class ClassImageDataset(InputDataset):
    """Square RGB images with integer class labels (``metadata['labels']``); optionally cached in memory."""

    def __init__(self, dataparser_outputs: DataparserOutputs, resolution: int, cache_images: bool = False) -> None:
        super().__init__(dataparser_outputs)
        self.resolution = resolution
        self.labels: torch.Tensor = dataparser_outputs.metadata["labels"]
        self.class_names = list(dataparser_outputs.metadata["class_names"])
        self.metadata = {**self.metadata, "resolution": resolution}
        bg = dataparser_outputs.alpha_color
        self.background = tuple(bg.tolist()) if bg is not None else (1.0, 1.0, 1.0)
        self._cache = None
        if cache_images:
            self._cache = torch.from_numpy(np.stack([self._decode(i) for i in range(len(self))]))

    def _decode(self, image_idx: int) -> npt.NDArray[np.uint8]:
        return load_square_rgb(self.image_filenames[image_idx], self.resolution, self.background)

    def get_numpy_image(self, image_idx: int) -> npt.NDArray[np.uint8]:
        if self._cache is not None:
            return self._cache[image_idx].numpy()
        return self._decode(image_idx)

    def get_metadata(self, data: Dict) -> Dict:
        return {"label": self.labels[data["image_idx"]]}
