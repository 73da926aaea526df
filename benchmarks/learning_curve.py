"""Learning curve of the tiny preset on the embedded shapes: does the generator get closer to the data?

Usage: python benchmarks/learning_curve.py [--steps 600] [--every 50] [--plot docs/images/learning_curve.png]
       [--samples docs/images/tiny_samples.png] [--num-images 128] [--seed 0] [--device cpu]

Trains ``triplane-gan-tiny`` in-process (``GanTrainer.train_iteration``, no ns-train) and measures the EMA
generator every ``--every`` steps with ``triplane_gan_ns.eval.learning``: the per-class colour/silhouette
distance to the real images, the class separation of the generated images, and FD-EffNetLite0 between
``--num-images`` generated and as many real images.  Prints a Markdown table, plots the curves (the plot is
rewritten after every measurement, so an interrupted run leaves its curves so far) and saves the final sample
grid (one row per class, one column per azimuth).
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import tempfile
from pathlib import Path
from typing import Dict, List

import numpy as np
import torch
from PIL import Image

from triplane_gan_ns.eval.learning import dataset_images, train_and_measure
from triplane_gan_ns.eval.metrics import FD_NAME

COLUMNS = ("step", "seconds", "colour_distance", "class_separation", FD_NAME)


def markdown_table(rows: List[Dict[str, object]]) -> str:
    header = "| step | seconds | colour/silhouette distance | class separation | FD-EffNetLite0 |"
    lines = [header, "| ---: | ---: | ---: | ---: | ---: |"]
    for row in rows:
        lines.append(
            f"| {row['step']} | {row['seconds']:.0f} | {row['colour_distance']:.3f} | "
            f"{row['class_separation']:.3f} | {row[FD_NAME]:.1f} |"
        )
    return "\n".join(lines)


def plot_curves(rows: List[Dict[str, object]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [row["step"] for row in rows]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    axes[0].plot(steps, [row["colour_distance"] for row in rows], marker="o")
    axes[0].set_title("colour/silhouette distance (lower is better)")
    axes[1].plot(steps, [row["class_separation"] for row in rows], marker="o", label="generated")
    axes[1].axhline(float(rows[0]["real_class_separation"]), color="gray", linestyle="--", label="real data")
    axes[1].set_title("class separation (min colour distance)")
    axes[1].legend()
    axes[2].plot(steps, [row[FD_NAME] for row in rows], marker="o")
    axes[2].set_title(f"{FD_NAME} (lower is better)")
    for ax in axes:
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def save_grid(grid: torch.Tensor, path: Path, scale: int) -> None:
    array = (grid.clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)
    image = Image.fromarray(array)
    if scale > 1:
        image = image.resize((image.width * scale, image.height * scale), resample=Image.Resampling.NEAREST)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="PNG")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--every", type=int, default=50)
    parser.add_argument("--plot", type=Path, default=Path("docs/images/learning_curve.png"))
    parser.add_argument("--samples", type=Path, default=Path("docs/images/tiny_samples.png"))
    parser.add_argument("--num-images", type=int, default=128, help="generated and real images per measurement")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1), help="CPU threads")
    parser.add_argument("--grid-scale", type=int, default=4, help="nearest-neighbour upscaling of the sample grid")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    from triplane_gan_ns.pretrained.efficientnet_lite0 import load_features
    from triplane_gan_ns.method_configs.triplane_gan import triplane_gan_tiny

    torch.manual_seed(args.seed)
    cfg = copy.deepcopy(triplane_gan_tiny.config)
    cfg.machine.device_type = args.device.split(":")[0]
    cfg.machine.seed = args.seed
    cfg.vis = "tensorboard"
    with tempfile.TemporaryDirectory() as tmp:
        cfg.output_dir = Path(tmp)
        cfg.set_timestamp()
        trainer = cfg.setup(local_rank=0, world_size=1)
        trainer.setup()
        model = trainer.pipeline.gan_model
        num_classes = model.num_classes
        real_images, real_labels = dataset_images(
            trainer.pipeline.datamanager.train_dataset, num=args.num_images, seed=args.seed
        )
        extractor = load_features(args.device)

        title = f"triplane-gan-tiny on the embedded shapes ({args.device}, seed {args.seed})"
        partial: List[Dict[str, object]] = []

        def report(row: Dict[str, object]) -> None:
            print(
                f"step {row['step']:>5}  {row['seconds']:7.0f} s  distance {row['colour_distance']:.3f}  "
                f"separation {row['class_separation']:.3f}  {FD_NAME} {row[FD_NAME]:.1f}",
                file=sys.stderr,
                flush=True,
            )
            partial.append(row)
            plot_curves(partial, args.plot, title)

        rows = train_and_measure(
            trainer,
            args.steps,
            args.every,
            real_images,
            real_labels,
            num_per_class=max(args.num_images // num_classes, 2),
            extractor=extractor,
            seed=args.seed,
            on_row=report,
        )
        save_grid(model.sample_grid(), args.samples, args.grid_scale)

    print(f"triplane-gan-tiny, {args.steps} steps, device {args.device}, {args.threads} CPU threads, seed {args.seed}")
    print(f"real-data class separation: {rows[0]['real_class_separation']:.3f}")
    print()
    print(markdown_table(rows))
    print(f"\nplot: {args.plot}\nsamples: {args.samples} (rows: classes {', '.join(model.class_names)})")


if __name__ == "__main__":
    main()
