"""Writing files atomically, and reading weights files safely with one-line reasons.

``atomic_write`` writes ``.<stem>.tmp-<pid><suffix>`` beside the target and renames it into place, so a target is
either absent, the old file or the new one.  A process killed during the write (``kill -9``, power loss) leaves
its temporary file behind; the next successful ``atomic_write`` into that folder removes the temporary files of
processes that no longer run.

``check_writable_dir`` / ``check_creatable_dir`` say in one line why an output folder cannot be written, before
any work is done.

``torch_load_reason`` turns an exception of ``torch.load(weights_only=True)`` into a complete short reason for a
``UserError``: the first sentence that says what is wrong, never torch's advice to load with
``weights_only=False`` (which would let the file run code).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Callable

from triplane_gan_ns.errors import UserError

_TEMPORARY = re.compile(r"^\..+\.tmp-(\d+)(\.[^.]*)?$")
"""Name of a temporary file of ``atomic_write``: ``.<stem>.tmp-<pid><suffix>``."""


def temporary_path(path: Path) -> Path:
    """The hidden temporary file ``atomic_write`` writes before renaming it onto ``path`` (keeps the suffix, for
    writers that choose the format by suffix)."""
    return path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale_temporaries(folder: Path) -> int:
    """Remove the temporary files of ``atomic_write`` in ``folder`` whose process is gone; returns how many."""
    removed = 0
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return 0
    for entry in entries:
        match = _TEMPORARY.match(entry.name)
        if match is None or int(match.group(1)) == os.getpid() or _running(int(match.group(1))):
            continue
        try:
            if entry.is_file():
                entry.unlink()
                removed += 1
        except OSError:
            pass
    return removed


def atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """Call ``write(tmp_path)`` and move the result onto ``path`` in one rename (no partial files); then remove
    stale temporary files of killed writers in the same folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    remove_stale_temporaries(path.parent)


def torch_load_reason(err: BaseException) -> str:
    """A short complete reason why ``torch.load(weights_only=True)`` failed, without torch's unsafe advice."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    lines = [
        line for line in lines
        if "weights_only" not in line and "Weights only load failed" not in line
        and not line.startswith("Check the documentation")
    ]
    if not lines:
        return type(err).__name__ if not str(err) else f"{type(err).__name__}: {str(err).splitlines()[0]}"
    text = lines[0]
    if isinstance(err, KeyError):
        text = f"{type(err).__name__} {text}"
    sentence = re.match(r"(.+?\.)(\s|$)", text)
    return (sentence.group(1) if sentence else text).rstrip(".")


def check_writable_dir(directory: Path, create: bool) -> None:
    """A UserError unless files can be created in ``directory`` (made first, with parents, if ``create``)."""
    directory = Path(directory)
    if not create and not directory.is_dir():
        problem = "is not a folder" if directory.exists() else "does not exist"
        raise UserError(f"output folder {directory} {problem}; create it or choose another output path")
    try:
        if create:
            directory.mkdir(parents=True, exist_ok=True)
        probe = directory / f".write-test.{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        reason = exc.strerror or exc
        raise UserError(f"cannot write to {directory} ({reason}); choose a writable output folder") from None


def check_creatable_dir(directory: Path) -> None:
    """A UserError unless ``directory`` exists and is writable, or can be created (its nearest existing parent is
    a writable folder); creates nothing."""
    existing = Path(directory).absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    check_writable_dir(existing, create=False)
