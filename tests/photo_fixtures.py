"""Generated ImageNet-style photo folders with every kind of file met in the wild (shared by data tests)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Dict, Tuple

import numpy as np
from PIL import Image

RED, BLUE = (220, 20, 20), (20, 20, 220)

# Folder names sort differently from the human names in the mapping file, which is itself unsorted.
SYNSETS = {"n00000002": "apple, Malus pumila", "n00000001": "zebra", "n00000003": "cat, true cat"}
CLASS_IDS = ["n00000001", "n00000002", "n00000003"]
CLASS_NAMES = ["zebra", "apple", "cat"]
NUM_BAD = 3  # text file named .JPEG, truncated JPEG, empty file


def two_colour(width: int, height: int, left=RED, right=BLUE) -> Image.Image:
    """Left half ``left``, right half ``right``."""
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    pixels[:, : width // 2] = left
    pixels[:, width // 2 :] = right
    return Image.fromarray(pixels)


def noise(width: int, height: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (max(1, height // 16), max(1, width // 16), 3), dtype=np.uint8)
    return Image.fromarray(coarse).resize((width, height), Image.Resampling.BILINEAR)


def _jpeg_bytes(image: Image.Image, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=95, **kwargs)
    return buffer.getvalue()


def make_photo_tree(root: Path, with_train: bool = True) -> Dict[str, Tuple[str, str]]:
    """Write the fixture tree; returns ``{relative path: (class id, kind)}`` with kind ``ok`` or ``bad``."""
    folder = root / "train" if with_train else root
    files: Dict[str, Tuple[str, str]] = {}

    def put(cid: str, name: str, kind: str, data: bytes) -> None:
        (folder / cid).mkdir(parents=True, exist_ok=True)
        (folder / cid / name).write_bytes(data)
        files[f"{cid}/{name}"] = (cid, kind)

    def save(cid: str, name: str, image: Image.Image, fmt: str, **kwargs) -> None:
        buffer = io.BytesIO()
        image.save(buffer, format=fmt, **kwargs)
        put(cid, name, "ok", buffer.getvalue())

    # Created in reverse order so that directory order differs from sorted order.
    save("n00000003", "h.jpg", noise(400, 250, 3), "JPEG", quality=95)
    save("n00000003", "i.png", noise(64, 64, 4), "PNG")
    rgba = np.zeros((150, 100, 4), dtype=np.uint8)
    rgba[..., :3] = RED
    rgba[75:, :, 3] = 255  # top half transparent
    save("n00000002", "d.png", Image.fromarray(rgba, "RGBA"), "PNG")
    save("n00000002", "e.png", noise(90, 90, 5).convert("P", palette=Image.Palette.ADAPTIVE), "PNG")
    truncated = _jpeg_bytes(noise(200, 200, 6))
    put("n00000002", "f.JPEG", "bad", truncated[: len(truncated) // 2])
    put("n00000002", "g.JPEG", "bad", b"")
    save("n00000001", "a.JPEG", two_colour(300, 200), "JPEG", quality=95)
    save("n00000001", "b.JPEG", noise(120, 160, 1).convert("L"), "JPEG", quality=95)
    save("n00000001", "c.JPEG", noise(180, 180, 2).convert("CMYK"), "JPEG", quality=95)
    put("n00000001", "bad_text.JPEG", "bad", b"<html>404 not found</html>\n")
    (folder / "n00000001" / "notes.txt").write_text("not an image suffix: ignored, not counted")
    (root / "LOC_synset_mapping.txt").write_text("".join(f"{k} {v}\n" for k, v in SYNSETS.items()))
    return files
