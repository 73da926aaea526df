"""Run by tests/test_resume.py: trains through the same entry point as users and kills itself with SIGKILL at a
chosen moment.

    python faulty_train.py FAULT NS_TRAIN_ARGS...

FAULT is ``checkpoint:N`` (half-way through writing the N-th checkpoint's bytes), ``samples:N`` (half-way through
writing the N-th orbit GIF of the samples), ``archive:N`` (in the middle of the N-th image read from a
prepare-dataset archive), ``after:SECONDS`` (that long after start, wherever the run is) or ``none``.
"""

import io
import os
import signal
import sys
import threading

import torch
from PIL import Image

from triplane_gan_ns.data import archive
from nerfstudio.scripts.train import entrypoint


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


kind, _, value = sys.argv[1].partition(":")
if kind == "checkpoint":
    save, calls = torch.save, [0]

    def half_save(obj, f, *args, **kwargs):
        if not str(f).endswith(".ckpt"):
            return save(obj, f, *args, **kwargs)
        calls[0] += 1
        if calls[0] < int(value):
            return save(obj, f, *args, **kwargs)
        buffer = io.BytesIO()
        save(obj, buffer, *args, **kwargs)
        with open(f, "wb") as handle:
            handle.write(buffer.getvalue()[: buffer.tell() // 2])
            handle.flush()
            os.fsync(handle.fileno())
        die()

    torch.save = half_save
elif kind == "samples":
    save_image, calls = Image.Image.save, [0]

    def half_gif(self, fp, format=None, **params):
        if format != "GIF":
            return save_image(self, fp, format, **params)
        calls[0] += 1
        if calls[0] < int(value):
            return save_image(self, fp, format, **params)
        buffer = io.BytesIO()
        save_image(self, buffer, format, **params)
        with open(fp, "wb") as handle:
            handle.write(buffer.getvalue()[: buffer.tell() // 2])
            handle.flush()
            os.fsync(handle.fileno())
        die()

    Image.Image.save = half_gif
elif kind == "archive":
    read, calls = archive.ArchiveImages.__getitem__, [0]

    def read_then_die(self, row):
        calls[0] += 1
        if calls[0] >= int(value):
            self._shard(int(archive.np.searchsorted(self.offsets, row, side="right") - 1))  # the shard is open
            die()
        return read(self, row)

    archive.ArchiveImages.__getitem__ = read_then_die
elif kind == "after":
    threading.Timer(float(value), die).start()
elif kind != "none":
    raise SystemExit(f"unknown fault {sys.argv[1]}")

sys.argv = ["ns-train", *sys.argv[2:]]
entrypoint()
