"""Images per second of the training data loader: raw class folders, the prepare-dataset archive, and a plain
``torchvision.datasets.ImageFolder`` with the same crop and resize, on the same generated JPEGs.

Usage: python benchmarks/data_loader.py [--num-images 2000] [--num-classes 10] [--resolutions 64 128]
                                        [--workers 0 2] [--batch 32]

Generates ``num-images`` JPEGs of 300 to 500 px per side (random aspect ratios) into a temporary folder,
writes one archive per resolution with ``prepare-dataset``, then times one epoch of batches for each loader
(the first batch, which includes starting the workers, is not timed).  Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def _machine() -> str:
    import PIL
    import torch
    import torchvision

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (
        f"{cpu}, {cores} usable cores, {platform.system()} {platform.release()}, Python {platform.python_version()}, "
        f"torch {torch.__version__}, torchvision {torchvision.__version__}, Pillow {PIL.__version__}"
    )


def generate_photos(root: Path, num_images: int, num_classes: int, seed: int = 0) -> None:
    """Smooth random colour fields with fine noise (JPEG sizes close to real photos), 300-500 px per side."""
    rng = np.random.default_rng(seed)
    for i in range(num_images):
        folder = root / "train" / f"n{i % num_classes:08d}"
        folder.mkdir(parents=True, exist_ok=True)
        width, height = (int(v) for v in rng.integers(300, 501, size=2))
        coarse = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        base = np.asarray(Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC), dtype=np.int16)
        pixels = np.clip(base + rng.integers(-20, 21, (height, width, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"{i:06d}.JPEG", quality=90)


def _time_batches(next_batch, num_batches: int, batch: int) -> float:
    next_batch()  # warm-up: starts the workers
    start = time.perf_counter()
    for _ in range(num_batches - 1):
        next_batch()
    return (num_batches - 1) * batch / (time.perf_counter() - start)


def ours(data: Path, resolution: int, workers: int, batch: int, num_images: int) -> float:
    from triplane_gan_ns.data.datamanager import GanDataManagerConfig
    from triplane_gan_ns.data.imagenet_dataparser import ImageFolderDataParserConfig

    config = GanDataManagerConfig(
        dataparser=ImageFolderDataParserConfig(data=data),
        resolution=resolution,
        batch_size=batch,
        num_workers=workers,
        cache_images=False,
    )
    datamanager = config.setup(device="cpu")
    steps = iter(range(10**9))
    rate = _time_batches(lambda: datamanager.next_train(next(steps)), num_images // batch, batch)
    del datamanager
    return rate


def torchvision_imagefolder(root: Path, resolution: int, workers: int, batch: int, num_images: int) -> float:
    import torch
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    transform = transforms.Compose(
        [transforms.Resize(resolution), transforms.CenterCrop(resolution), transforms.ToTensor()]
    )
    dataset = datasets.ImageFolder(str(root / "train"), transform=transform)
    loader = DataLoader(
        dataset,
        batch_size=batch,
        shuffle=True,
        drop_last=True,
        num_workers=workers,
        generator=torch.Generator().manual_seed(0),
    )
    iterator = iter(loader)
    return _time_batches(lambda: next(iterator), num_images // batch, batch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num-images", type=int, default=2000)
    parser.add_argument("--num-classes", type=int, default=10)
    parser.add_argument("--resolutions", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads of the main process (DataLoader workers always use 1); more threads on a shared "
        "machine make the per-image float conversion wait on busy cores",
    )
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)

    from triplane_gan_ns.data.prepare import prepare_dataset

    with tempfile.TemporaryDirectory(prefix="triplane-gan-bench-") as tmp:
        root = Path(tmp) / "photos"
        start = time.perf_counter()
        generate_photos(root, args.num_images, args.num_classes)
        print(f"generated {args.num_images} JPEGs in {time.perf_counter() - start:.1f} s")
        archives, prepare_rates = {}, {}
        for resolution in args.resolutions:
            archives[resolution] = Path(tmp) / f"archive-{resolution}"
            start = time.perf_counter()
            prepare_dataset(root, archives[resolution], resolution=resolution, workers=max(args.workers))
            prepare_rates[resolution] = args.num_images / (time.perf_counter() - start)

        rows = []
        for resolution in args.resolutions:
            for workers in args.workers:
                common = (resolution, workers, args.batch, args.num_images)
                rows.append(
                    (
                        resolution,
                        workers,
                        ours(root, *common),
                        ours(archives[resolution], *common),
                        torchvision_imagefolder(root, *common),
                    )
                )

    print(f"\nMachine: {_machine()}")
    print(
        f"{args.num_images} JPEGs (300-500 px, {args.num_classes} classes), batch {args.batch}, one epoch, "
        f"{args.threads} torch thread(s) in the main process; images/s (higher is better)\n"
    )
    print("| resolution | num_workers | ours, raw folder | ours, archive | torchvision ImageFolder |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    for resolution, workers, raw, packed, reference in rows:
        print(f"| {resolution} | {workers} | {raw:.0f} | {packed:.0f} | {reference:.0f} |")
    workers = max(args.workers)
    print(
        "\nprepare-dataset (one pass, "
        f"{workers} workers): " + ", ".join(f"{r}²: {v:.0f} images/s" for r, v in prepare_rates.items())
    )


if __name__ == "__main__":
    main()
