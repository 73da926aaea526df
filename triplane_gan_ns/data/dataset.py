"""Dataset of class-labelled photos, decoded to square RGB images of one resolution.

Photos in the wild include files that cannot be decoded (truncated downloads, HTML pages saved as .JPEG, empty
files).  Such a file never stops a run: the dataset returns a zero image with ``valid = False`` and the reason,
and the datamanager replaces it and counts it.  Images come either from image files (decoded with PIL) or from
the memory-mapped shards of a ``prepare-dataset`` archive (no decoding).
"""

from __future__ import annotations

from typing import Dict, Optional, Tuple

import numpy as np
import numpy.typing as npt
import torch
from jaxtyping import UInt8
from nerfstudio.data.dataparsers.base_dataparser import DataparserOutputs
from nerfstudio.data.datasets.base_dataset import InputDataset
from PIL import Image, ImageOps

from triplane_gan_ns.data.archive import ArchiveImages


def _to_8bit(im: Image.Image) -> Image.Image:
    """Single-channel images of more than 8 bits as 8-bit grayscale, scaled rather than clipped: 16-bit
    integers by 255/65535, 32-bit integers by their 16-bit range when they fit it (PIL reads 16-bit PNGs as
    ``I``) else by 255/(2^32 - 1), floats in [0, 1] by 255 (larger floats are taken as 0..255)."""
    if im.mode not in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        return im
    values = np.asarray(im, dtype=np.float64)
    if im.mode.startswith("I;16"):
        scale = 255.0 / 65535.0
    elif im.mode == "I":
        scale = 255.0 / 65535.0 if values.min(initial=0) >= 0 and values.max(initial=0) <= 65535 else 255.0 / (2**32 - 1)
        values = values - min(values.min(initial=0), 0)
    else:
        scale = 255.0 if values.max(initial=0) <= 1.0 else 1.0
    return Image.fromarray(np.clip(np.round(values * scale), 0, 255).astype(np.uint8), mode="L")


def load_square_rgb(path, resolution: int, background=(1.0, 1.0, 1.0)) -> UInt8[npt.NDArray, "res res 3"]:
    """Decode any PIL-readable image: EXIF orientation applied, alpha composited over ``background``,
    grayscale/CMYK/palette converted to RGB, 16-bit/32-bit/float grayscale scaled to 8 bits, centre-cropped to a square and resized to ``resolution``².

    JPEGs at least twice the target size are decoded at a reduced scale (libjpeg's DCT scaling, 1/2 to 1/8)
    that keeps at least the target resolution, then resized with a Lanczos filter.  Raises ``OSError`` (or
    another PIL error) for files that are not complete images; truncated files are never padded.
    """
    with Image.open(path) as im:
        w, h = im.size
        reduction = min(w, h) // resolution
        if im.format == "JPEG" and reduction >= 2:
            scale = 8 if reduction >= 8 else 4 if reduction >= 4 else 2
            im.draft(None, (w // scale, h // scale))
        im = ImageOps.exif_transpose(im)
        im = _to_8bit(im)
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
        return np.array(im, dtype=np.uint8)


def try_load_square_rgb(
    path, resolution: int, background=(1.0, 1.0, 1.0)
) -> Tuple[Optional[UInt8[npt.NDArray, "res res 3"]], Optional[str]]:
    """``(image, None)``, or ``(None, reason)`` for a file that cannot be decoded."""
    try:
        return load_square_rgb(path, resolution, background), None
    except Exception as exc:  # any decoder failure means a bad file, whatever PIL plugin raised it
        return None, f"{type(exc).__name__}: {exc}"


def resize_square(image: UInt8[npt.NDArray, "h h 3"], resolution: int) -> UInt8[npt.NDArray, "res res 3"]:
    if image.shape[0] == resolution:
        return image
    resized = Image.fromarray(image).resize((resolution, resolution), resample=Image.Resampling.LANCZOS)
    return np.array(resized, dtype=np.uint8)


class ClassImageDataset(InputDataset):
    """Square RGB images with integer class labels (``metadata['labels']``); optionally cached in memory.

    ``dataset[i]`` is ``{"image_idx", "image": [R, R, 3] float in [0, 1], "label", "valid", "error"}``; an
    unreadable file gives a zero image, ``valid = False`` and the reason in ``error``.
    """

    def __init__(self, dataparser_outputs: DataparserOutputs, resolution: int, cache_images: bool = False) -> None:
        super().__init__(dataparser_outputs)
        self.resolution = resolution
        self.labels: torch.Tensor = dataparser_outputs.metadata["labels"]
        self.class_names = list(dataparser_outputs.metadata["class_names"])
        self.metadata = {**self.metadata, "resolution": resolution}
        bg = dataparser_outputs.alpha_color
        self.background = tuple(bg.tolist()) if bg is not None else (1.0, 1.0, 1.0)
        self._archive: Optional[ArchiveImages] = None
        self._archive_rows: Optional[torch.Tensor] = None
        if "archive" in dataparser_outputs.metadata:
            info = dataparser_outputs.metadata["archive"]
            self._archive = ArchiveImages(info["root"], info["shards"], info["counts"])
            self._archive_rows = dataparser_outputs.metadata["archive_rows"]
        self._cache: Optional[torch.Tensor] = None
        self.cache_errors: Dict[int, str] = {}
        """Why each file that failed while filling the cache is unreadable, by index."""
        if cache_images:
            images = []
            for i in range(len(self)):
                image, error = self._load(i)
                if error is not None:
                    self.cache_errors[i] = error
                images.append(image if image is not None else self._blank())
            self._cache = torch.from_numpy(np.stack(images)) if images else None

    @property
    def is_archive(self) -> bool:
        return self._archive is not None

    def _blank(self) -> UInt8[npt.NDArray, "res res 3"]:
        return np.zeros((self.resolution, self.resolution, 3), dtype=np.uint8)

    def _decode(self, image_idx: int) -> UInt8[npt.NDArray, "res res 3"]:
        if self._archive is not None:
            assert self._archive_rows is not None
            return resize_square(self._archive[int(self._archive_rows[image_idx])], self.resolution)
        return load_square_rgb(self.image_filenames[image_idx], self.resolution, self.background)

    def _load(self, image_idx: int) -> Tuple[Optional[UInt8[npt.NDArray, "res res 3"]], Optional[str]]:
        if self._cache is not None:
            return self._cache[image_idx].numpy(), self.cache_errors.get(image_idx)
        if self._archive is not None:
            return self._decode(image_idx), None
        path = self.image_filenames[image_idx]
        image, reason = try_load_square_rgb(path, self.resolution, self.background)
        return image, None if reason is None else f"{path}: {reason}"

    def get_numpy_image(self, image_idx: int) -> UInt8[npt.NDArray, "res res 3"]:
        """The decoded image; raises the decoder's error for an unreadable file."""
        if self._cache is not None:
            if image_idx in self.cache_errors:
                raise OSError(self.cache_errors[image_idx])
            return self._cache[image_idx].numpy()
        return self._decode(image_idx)

    def __getitem__(self, image_idx: int) -> Dict:
        image, error = self._load(image_idx)
        if image is None:
            image = self._blank()
        return {
            "image_idx": image_idx,
            "image": torch.from_numpy(image).float().div_(255.0),
            "label": self.labels[image_idx],
            "valid": error is None,
            "error": error or "",
        }

    def get_metadata(self, data: Dict) -> Dict:
        return {"label": self.labels[data["image_idx"]]}
