"""``triplane-gan prepare-dataset SRC DEST`` (``prepare_dataset``): decode a folder of photos once into a compact archive.

Every file is decoded, centre-cropped and resized exactly as training would decode it (``load_square_rgb``),
by a pool of worker processes, and stored in shards of uint8 arrays (see ``archive.py`` for the layout).
Training then reads the shards memory-mapped, without decoding.

Shard ``k`` always holds the readable files among source files ``[k * shard_size, (k + 1) * shard_size)`` of
the sorted listing, so an interrupted run resumes where it stopped: each shard is written to a temporary file
and renamed into place, finished shards are recorded in ``.progress.json``, and ``manifest.json`` is written
last.  Unreadable files are skipped and listed in the manifest.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Literal, Optional, Sequence, Tuple

import numpy as np
from jaxtyping import Int64, UInt8
from nerfstudio.utils.rich_utils import CONSOLE
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task, TextColumn, TimeRemainingColumn
from rich.text import Text

from triplane_gan_ns.data import archive
from triplane_gan_ns.data.dataset import try_load_square_rgb
from triplane_gan_ns.data.imagenet_dataparser import ImageFolderDataParserConfig, list_class_folders
from triplane_gan_ns.data.renders_dataparser import RendersDataParserConfig
from triplane_gan_ns.errors import UserError
from triplane_gan_ns.fileio import atomic_write

Layout = Literal["auto", "imagenet", "renders"]
DEFAULT_WORKERS = max(1, min(8, os.cpu_count() or 1))
"""Decoding processes unless told otherwise."""


@dataclass
class SourceListing:
    """What a dataparser found in SRC: files in archive order, their labels and the classes."""

    files: List[Path]
    labels: Int64[np.ndarray, "num"]
    class_ids: List[str]
    class_names: List[str]
    layout: str


def detect_layout(src: Path) -> str:
    """``renders`` when the first category folder holds ``<object>/rgb`` folders, else ``imagenet``."""
    categories = list_class_folders(src)
    if categories:
        with os.scandir(src / categories[0]) as entries:
            if any(e.is_dir() and (Path(e.path) / "rgb").is_dir() for e in entries):
                return "renders"
    return "imagenet"


def list_source(
    src: Path,
    layout: Layout = "auto",
    classes: Sequence[str] = (),
    max_images_per_class: int = 0,
    background: Tuple[float, float, float] = (1.0, 1.0, 1.0),
) -> SourceListing:
    """Files and labels of SRC, listed by the dataparser that training on SRC itself would use."""
    src = Path(src)
    layout = detect_layout(src) if layout == "auto" else layout
    if layout == "renders":
        if classes or max_images_per_class:
            raise UserError("--classes and --max-images-per-class apply to the imagenet layout only")
        outputs = RendersDataParserConfig(data=src, background=background).setup().get_dataparser_outputs()
        class_ids = list(outputs.metadata["class_names"])
    else:
        outputs = (
            ImageFolderDataParserConfig(
                data=src,
                classes=tuple(classes),
                max_images_per_class=max_images_per_class,
                background=background,
            )
            .setup()
            .get_dataparser_outputs()
        )
        class_ids = list(outputs.metadata["class_ids"])
    return SourceListing(
        files=list(outputs.image_filenames),
        labels=outputs.metadata["labels"].numpy().astype(np.int64),
        class_ids=class_ids,
        class_names=list(outputs.metadata["class_names"]),
        layout=layout,
    )


def _write_atomic(path: Path, write: Callable) -> None:
    """Write through ``write(file)`` into a temporary file next to ``path`` (flushed to disk), then rename it
    into place (``fileio.atomic_write``)."""

    def write_file(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())

    atomic_write(path, write_file)


def _write_json_atomic(path: Path, value) -> None:
    _write_atomic(path, lambda f: f.write(json.dumps(value, indent=1).encode()))


def _write_npy_atomic(path: Path, array: np.ndarray) -> None:
    _write_atomic(path, lambda f: np.save(f, array))


_worker_options: Dict = {}


def _init_worker(resolution: int, background: Tuple[float, float, float]) -> None:
    _worker_options.update(resolution=resolution, background=background)


def _decode(path: Path) -> Tuple[Optional[UInt8[np.ndarray, "res res 3"]], Optional[str]]:
    return try_load_square_rgb(path, _worker_options["resolution"], _worker_options["background"])


def _check_writable(dest: Path) -> None:
    try:
        dest.mkdir(parents=True, exist_ok=True)
        probe = dest / f".write-test.{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise UserError(f"cannot write to {dest} ({exc.strerror or exc}); choose a writable DEST folder") from None


def _settings(
    src: Path,
    listing: SourceListing,
    resolution: int,
    shard_size: int,
    background: Tuple[float, float, float],
    classes: Sequence[str],
    max_images_per_class: int,
) -> Dict:
    return {
        "source": str(Path(src).resolve()),
        "layout": listing.layout,
        "resolution": resolution,
        "shard_size": shard_size,
        "background": list(background),
        "classes": list(classes),
        "max_images_per_class": max_images_per_class,
        "num_files": len(listing.files),
    }


def _shard_ranges(num_files: int, shard_size: int) -> List[Tuple[int, int]]:
    return [(start, min(start + shard_size, num_files)) for start in range(0, num_files, shard_size)]


def prepare_dataset(
    src: Path,
    dest: Path,
    *,
    resolution: int = 256,
    workers: int = DEFAULT_WORKERS,
    shard_size: int = 1000,
    layout: Layout = "auto",
    classes: Sequence[str] = (),
    max_images_per_class: int = 0,
    background: Tuple[float, float, float] = (1.0, 1.0, 1.0),
    after_shard: Optional[Callable[[int], None]] = None,
) -> Dict:
    """Write (or finish) the archive ``dest`` of the photos in ``src``, as ``triplane-gan prepare-dataset`` does;
    returns its manifest.

    ``resolution``: side of the stored square images; ``workers`` decoding processes (0: this one);
    ``shard_size`` source files per shard; ``layout`` of ``src`` (``auto``, ``imagenet`` or ``renders``);
    ``classes`` and ``max_images_per_class`` select images (imagenet layout); ``background`` is composited behind
    transparent pixels.  ``after_shard(index)`` is called after each shard is written and recorded (tests
    interrupt the run there).  Bad options raise ``UserError``.
    """
    src, dest = Path(src), Path(dest)
    if not src.is_dir():
        raise UserError(f"source folder {src} does not exist; pass a folder of <class>/*.JPEG")
    if archive.is_archive(src):
        raise UserError(f"{src} is already a prepare-dataset archive; train on it with --data {src}")
    if resolution < 1 or shard_size < 1:
        raise UserError("--resolution and --shard-size must be positive")
    listing = list_source(src, layout, classes, max_images_per_class, background)
    _check_writable(dest)
    settings = _settings(src, listing, resolution, shard_size, background, classes, max_images_per_class)

    if archive.is_archive(dest):
        manifest = json.loads((dest / archive.MANIFEST).read_text())
        if manifest.get("settings") != settings:
            raise UserError(f"{dest} already holds an archive made from other files or settings; choose another DEST")
        CONSOLE.print(f"{dest} is already complete ({manifest['num_images']} images)")
        return manifest

    progress_path = dest / archive.PROGRESS
    progress: Dict = {"settings": settings, "shards": {}}
    if progress_path.exists():
        previous = json.loads(progress_path.read_text())
        if previous.get("settings") != settings:
            raise UserError(
                f"{dest} holds an unfinished archive made from other files or settings; "
                "re-run with the same options or choose another DEST"
            )
        progress = previous

    ranges = _shard_ranges(len(listing.files), shard_size)
    done = {int(k) for k, v in progress["shards"].items() if _shard_complete(dest, int(k), v["count"])}
    todo = [k for k in range(len(ranges)) if k not in done]
    done_files = sum(ranges[k][1] - ranges[k][0] for k in done)
    if done:
        CONSOLE.print(f"Resuming: {len(done)} of {len(ranges)} shards already written")

    columns = (TextColumn("decoding"), BarColumn(), MofNCompleteColumn(), _SpeedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=CONSOLE) as bar:
        task = bar.add_task("decoding", total=len(listing.files), completed=done_files)
        files = [listing.files[i] for k in todo for i in range(*ranges[k])]
        with _decoded_images(files, workers, resolution, background) as results:
            for k in todo:
                start, stop = ranges[k]
                images, labels, skipped = [], [], []
                for i in range(start, stop):
                    image, error = next(results)
                    if image is None:
                        skipped.append({"file": _relative(listing.files[i], src), "error": error})
                    else:
                        images.append(image)
                        labels.append(listing.labels[i])
                    bar.advance(task)
                _write_shard(dest, k, images, labels, resolution)
                progress["shards"][str(k)] = {"count": len(images), "skipped": skipped}
                _write_json_atomic(progress_path, progress)
                if after_shard is not None:
                    after_shard(k)

    return _finish(dest, listing, settings, progress, len(ranges))


class _SpeedColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        return Text(f"{task.speed or 0:.0f} img/s")


def _relative(path: Path, root: Path) -> str:
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return str(path)


def _shard_complete(dest: Path, index: int, count: int) -> bool:
    return count == 0 or all((dest / name).is_file() for name in archive.shard_names(index))


def _write_shard(dest: Path, index: int, images: List[np.ndarray], labels: List[int], resolution: int) -> None:
    if not images:
        return  # a shard of unreadable files only: nothing to store, the manifest omits it
    images_name, labels_name = archive.shard_names(index)
    _write_npy_atomic(dest / labels_name, np.asarray(labels, dtype=np.int64))
    _write_npy_atomic(dest / images_name, np.stack(images).reshape(len(images), resolution, resolution, 3))


def _finish(dest: Path, listing: SourceListing, settings: Dict, progress: Dict, num_shards: int) -> Dict:
    shards, skipped = [], []
    for k in range(num_shards):
        entry = progress["shards"][str(k)]
        skipped.extend(entry["skipped"])
        if entry["count"] > 0:
            images_name, labels_name = archive.shard_names(k)
            shards.append({"images": images_name, "labels": labels_name, "count": entry["count"]})
    num_images = sum(s["count"] for s in shards)
    if num_images == 0:
        raise UserError(f"none of the {len(listing.files)} image files under {settings['source']} could be decoded")
    class_index = {str(i): {"id": cid, "name": name} for i, (cid, name) in enumerate(zip(listing.class_ids, listing.class_names))}
    _write_json_atomic(dest / archive.CLASS_INDEX, class_index)
    manifest = {
        "format": archive.FORMAT,
        "version": archive.VERSION,
        "resolution": settings["resolution"],
        "num_images": num_images,
        "num_classes": len(class_index),
        "shards": shards,
        "skipped": len(skipped),
        "skipped_files": skipped,
        "settings": settings,
    }
    _write_json_atomic(dest / archive.MANIFEST, manifest)
    (dest / archive.PROGRESS).unlink(missing_ok=True)
    CONSOLE.print(
        f"Wrote {num_images} images of {len(class_index)} classes at {settings['resolution']}² to {dest} "
        f"({len(shards)} shards, {len(skipped)} unreadable files skipped)"
    )
    return manifest


@contextlib.contextmanager
def _decoded_images(
    files: Sequence[Path], workers: int, resolution: int, background: Tuple[float, float, float]
) -> Iterator[Iterator[Tuple[Optional[UInt8[np.ndarray, "res res 3"]], Optional[str]]]]:
    """``(image, error)`` for each of ``files`` in order, decoded by a pool of ``workers`` processes (none: in
    this process)."""
    initargs = (resolution, tuple(background))
    if workers <= 0:
        _init_worker(*initargs)
        yield map(_decode, files)
        return
    pool = multiprocessing.get_context().Pool(workers, _init_worker, initargs)
    try:
        yield pool.imap(_decode, files, chunksize=8)
    finally:
        pool.terminate()
        pool.join()
