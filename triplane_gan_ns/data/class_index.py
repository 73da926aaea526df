"""The class index of a training run.

``class_index.json`` sits next to a run's ``config.yml``: the stable label -> class mapping and the image
resolution the generator was trained with, written when training starts.  With ``config.yml`` and a checkpoint
it is all a trained generator needs: the tools read it instead of the data.

Not to be confused with the ``class_index.json`` of a prepared archive (``archive.py``), which maps the
archive's classes for the dataparser.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Sequence

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
