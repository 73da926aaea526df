"""Make the README's pictures from a trained run, through the same commands a user runs.

Usage: python docs/make_pictures.py RUN_DIR [--out docs/images] [--pti-steps 120]

Writes into ``--out``:

* ``samples.png``   classes (rows) x azimuths (columns) of the EMA generator, each view rendered at 128²
* ``orbit.gif``     one object per class turning around (``triplane-gan render``), side by side
* ``mesh.png``      the mesh ``triplane-gan export-mesh`` writes for class 0, drawn with matplotlib
* ``pti.png``       single-view reconstruction (``triplane-gan invert``) of an embedded-style render of a shape
                    the generator never saw: input, stage 1, stage 2, then novel views of the result
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

TRIPLANE_GAN = str(Path(sys.executable).with_name("triplane-gan"))


def _run(*args: str) -> None:
    subprocess.run([TRIPLANE_GAN, *args], check=True, stdout=subprocess.DEVNULL)


def _upscale(image: Image.Image, size: int) -> Image.Image:
    return image.resize((size * image.width // image.height, size), Image.Resampling.NEAREST)


def samples(run: Path, out: Path) -> None:
    from triplane_gan_ns.runs import load_model

    model, _ = load_model(run / "config.yml")
    grid = model.sample_grid(num_views=6, resolution=128)  # the tiny generator's field, rendered at 4x its images
    array = (grid.clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    Image.fromarray(array).save(out / "samples.png")


def orbit(run: Path, out: Path, tmp: Path, classes: int) -> None:
    _run("render", "--load-config", str(run / "config.yml"), "--output-dir", str(tmp / "render"),
         "--classes", *[str(c) for c in range(classes)], "--seeds", "1", "--frames", "36", "--resolution", "96",
         "--views", "4")
    gifs = [Image.open(tmp / "render" / f"class{c}_seed1_orbit.gif") for c in range(classes)]
    frames = []
    for k in range(gifs[0].n_frames - 1):  # the last frame repeats the first
        row = []
        for gif in gifs:
            gif.seek(k)
            row.append(np.asarray(gif.convert("RGB")))
        frames.append(Image.fromarray(np.concatenate(row, axis=1)))
    frames[0].save(out / "orbit.gif", save_all=True, append_images=frames[1:], duration=80, loop=0)


def mesh(run: Path, out: Path, tmp: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import trimesh

    path = tmp / "mesh.ply"
    _run("export-mesh", "--load-config", str(run / "config.yml"), "--output", str(path), "--class", "0",
         "--seed", "1", "--resolution", "96")
    surface = trimesh.load(path)
    colours = np.asarray(surface.visual.vertex_colors)[:, :3] / 255.0
    face_colours = colours[surface.faces].mean(axis=1)
    light = np.array([0.4, 0.3, 1.0]) / np.linalg.norm([0.4, 0.3, 1.0])
    shade = 0.45 + 0.55 * np.clip(surface.face_normals @ light, 0, 1)
    fig = plt.figure(figsize=(4, 4))
    ax = fig.add_subplot(projection="3d")
    poly = ax.plot_trisurf(*surface.vertices.T, triangles=surface.faces, linewidth=0)
    poly.set_facecolors(np.clip(face_colours * shade[:, None], 0, 1))
    bound = np.abs(surface.vertices).max()
    for setter in (ax.set_xlim, ax.set_ylim, ax.set_zlim):
        setter(-bound, bound)
    ax.set_box_aspect((1, 1, 1))
    ax.view_init(elev=20, azim=30)
    ax.set_axis_off()
    fig.savefig(out / "mesh.png", dpi=110, bbox_inches="tight")
    plt.close(fig)


def pti(run: Path, out: Path, tmp: Path, steps: int) -> None:
    from triplane_gan_ns.data.embedded import render_shape
    from triplane_gan_ns.data.shapes import Shape
    from triplane_gan_ns.cameras import look_at

    shape = Shape(kind="torus", size=0.45, aspect=0.35, color=(0.85, 0.35, 0.2))  # not in the training set
    eye = 2.5 * torch.tensor([math.cos(0.3), 0.0, math.sin(0.3)])  # yaw 0, pitch 0.3 rad
    rgb, _, _ = render_shape(shape, look_at(eye), 128, 40.0)
    photo = tmp / "photo.png"
    Image.fromarray((rgb.clamp(0, 1).numpy() * 255).round().astype(np.uint8)).save(photo)
    _run("invert", "--load-config", str(run / "config.yml"), "--image", str(photo), "--class", "torus",
         "--output-dir", str(tmp / "pti"), "--perceptual", "efficientnet-lite0", "--pitch-degrees", f"{math.degrees(0.3):.2f}",
         "--inversion.latent-steps", str(steps), "--inversion.generator-steps", str(steps), "--turntable-frames", "8")
    result = tmp / "pti" / "photo"
    size = 128
    tiles = [_upscale(Image.open(result / name).convert("RGB"), size) for name in ("input.png", "stage1.png", "stage2.png")]
    tiles.append(_upscale(Image.open(result / "latent-pivot_grid.png").convert("RGB"), size))
    canvas = Image.new("RGB", (sum(t.width for t in tiles) + 8 * (len(tiles) - 1), size), "white")
    x = 0
    for tile in tiles:
        canvas.paste(tile, (x, 0))
        x += tile.width + 8
    canvas.save(out / "pti.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="run folder with config.yml")
    parser.add_argument("--out", type=Path, default=Path("docs/images"))
    parser.add_argument("--pti-steps", type=int, default=120)
    parser.add_argument("--classes", type=int, default=4)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        samples(args.run, args.out)
        orbit(args.run, args.out, Path(tmp), args.classes)
        mesh(args.run, args.out, Path(tmp))
        pti(args.run, args.out, Path(tmp), args.pti_steps)
    print(f"pictures in {args.out}")


if __name__ == "__main__":
    main()
