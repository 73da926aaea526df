"""Separating a photo's object from its background, so that the background does not become geometry.

``border``: the background colour is the median of the image's outermost pixels; a pixel is foreground when its
colour is farther from that than the border's own spread allows (and at least ``min_distance``); holes in the
object are filled and only the largest connected region is kept.  When the border is not one colour (a
cluttered scene) or nothing / everything differs from it, no mask can be told apart and the whole photo is kept
(``ForegroundMask.reason`` says why).  The photo is then composited onto the generator's background colour.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Tuple

import numpy as np
from scipy import ndimage

ForegroundMode = Literal["none", "border"]

BORDER_FRACTION = 0.04
"""Width of the border the background colour is estimated from, as a fraction of the side (at least 1 pixel)."""
MAX_BORDER_SPREAD = 0.2
"""The border counts as one colour when 90 % of its pixels lie within this distance (RGB in [0, 1]) of its median."""
MIN_DISTANCE = 0.12
"""A pixel must differ from the background colour by at least this much to be foreground."""
MIN_AREA, MAX_AREA = 0.01, 0.97
"""A mask covering less or more than these fractions of the image is not an object on a background."""


@dataclass
class ForegroundMask:
    mask: np.ndarray
    """[H, W] bool, True on the object (all True when no background was found)."""
    background: Tuple[float, float, float]
    """The estimated background colour (RGB in [0, 1])."""
    found: bool
    """Whether a background was separated (False: the whole photo is kept)."""
    reason: str
    """One line: what was found, or why nothing was."""


def border_pixels(image: np.ndarray, fraction: float = BORDER_FRACTION) -> np.ndarray:
    """[N, 3] pixels of the outermost ``fraction`` of each side of an [H, W, 3] image."""
    h, w = image.shape[:2]
    band = max(1, int(round(fraction * min(h, w))))
    ring = np.zeros((h, w), dtype=bool)
    ring[:band], ring[-band:], ring[:, :band], ring[:, -band:] = True, True, True, True
    return image[ring]


def border_foreground(image: np.ndarray) -> ForegroundMask:
    """The object of an [H, W, 3] image in [0, 1] seen against a background of about one colour."""
    image = np.asarray(image, dtype=np.float64)
    border = border_pixels(image)
    background = np.median(border, axis=0)
    spread = float(np.quantile(np.linalg.norm(border - background, axis=1), 0.9))
    colour = tuple(float(c) for c in background)
    everything = np.ones(image.shape[:2], dtype=bool)
    if spread > MAX_BORDER_SPREAD:
        return ForegroundMask(everything, colour, False, f"the photo's border is not one colour (spread {spread:.2f}); whole photo used")
    distance = np.linalg.norm(image - background, axis=2)
    mask = distance > max(MIN_DISTANCE, 2.0 * spread)
    labels, count = ndimage.label(mask)
    if count > 1:
        sizes = ndimage.sum(mask, labels, index=np.arange(1, count + 1))
        mask = labels == 1 + int(np.argmax(sizes))
    mask = ndimage.binary_fill_holes(mask)
    area = float(mask.mean())
    if not MIN_AREA <= area <= MAX_AREA:
        return ForegroundMask(everything, colour, False, f"no object stands out from the background ({area:.0%} of the photo differs); whole photo used")
    return ForegroundMask(mask, colour, True, f"object on {area:.0%} of the photo, background colour "
                          f"({colour[0]:.2f}, {colour[1]:.2f}, {colour[2]:.2f}) from the border")


def composite(image: np.ndarray, mask: np.ndarray, background: Tuple[float, float, float]) -> np.ndarray:
    """``image`` ([H, W, 3] in [0, 1]) where ``mask`` is True, ``background`` elsewhere."""
    return np.where(mask[..., None], image, np.asarray(background, dtype=image.dtype)).astype(image.dtype)
