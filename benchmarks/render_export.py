"""Time to render one view and to export one mesh from a generator, for the presets (random weights).

Usage: python benchmarks/render_export.py [--presets tiny paper] [--render-resolution 256] [--mesh-resolution 256]
       [--device cpu]

Per preset (each in its own process, so the peak memory is that preset's alone):

* planes: mapping + synthesis of one latent's triplane;
* render: one raw volume-rendered view at --render-resolution² (``render_view(raw=True)``, the model's ray
  chunk size), as ``triplane-gan render --resolution`` does;
* mesh: density on the --mesh-resolution³ lattice (chunks of 2^18 points), then marching cubes, floater
  removal and vertex colours, as ``triplane-gan export-mesh`` does.  Random weights never reach the default
  density threshold (10), so the surface is taken at the lattice's 90th percentile of density, which gives a
  surface of realistic size for marching cubes.

Prints a Markdown table (one row per preset) after a line describing the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

from presets import PRESETS, preset_model


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _measure(preset: str, render_resolution: int, mesh_resolution: int, device: str) -> dict:
    import numpy as np
    import torch

    from triplane_gan_ns.latents import Latent
    from triplane_gan_ns.export.mesh import latent_field_fns
    from triplane_gan_ns.surface import density_grid, mesh_from_grid
    from triplane_gan_ns.export.video import orbit_cameras, render_view

    model, resolution = preset_model(preset, device)
    model.eval()
    sampler = model.pose_sampler.config
    latent = Latent(class_index=0, seed=0, truncation_psi=0.7)
    gen = model.generator_ema

    with torch.no_grad():
        ws = latent.ws(model)
        gen.planes(ws)  # warm-up
        _sync(device)
        start = time.perf_counter()
        planes = gen.planes(ws)
        _sync(device)
        planes_s = time.perf_counter() - start

        render_view(model, ws, planes, orbit_cameras(1, 16, sampler.radius, sampler.fov_degrees), raw=True)
        camera = orbit_cameras(1, render_resolution, sampler.radius, sampler.fov_degrees)
        start = time.perf_counter()
        image = render_view(model, ws, planes, camera, raw=True)["image"]
        _sync(device)
        render_s = time.perf_counter() - start
        assert image.shape[-1] == render_resolution

    density_fn, colour_fn = latent_field_fns(model, latent)
    bound = gen.config.scene_bound
    start = time.perf_counter()
    grid = density_grid(density_fn, mesh_resolution, bound, device=device)
    _sync(device)
    density_s = time.perf_counter() - start
    threshold = float(np.quantile(grid, 0.9))
    start = time.perf_counter()
    mesh = mesh_from_grid(grid, bound, threshold, colour_fn, keep_components=1, device=device)
    surface_s = time.perf_counter() - start

    if device.startswith("cuda"):
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "preset": preset,
        "plane": f"3x{gen.backbone.plane_channels}x{gen.backbone.plane_resolution}^2",
        "samples_per_ray": gen.config.num_coarse_samples + gen.config.num_importance_samples,
        "planes_s": planes_s,
        "render_s": render_s,
        "density_s": density_s,
        "surface_s": surface_s,
        "faces": len(mesh.faces),
        "peak_mb": peak_mb,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["tiny", "paper"], choices=sorted(PRESETS))
    parser.add_argument("--render-resolution", type=int, default=256)
    parser.add_argument("--mesh-resolution", type=int, default=256)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--one", metavar="PRESET", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(_measure(args.one, args.render_resolution, args.mesh_resolution, args.device)))
        return
    import torch

    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores (load average {load}), "
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, device {args.device}"
    )
    r, m = args.render_resolution, args.mesh_resolution
    print(f"| preset | planes | samples/ray | triplane (s) | render {r}² raw (s) | density {m}³ (s) "
          f"| marching cubes + colours (s) | mesh {m}³ total (s) | faces | peak MB |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for preset in args.presets:
        cmd = [sys.executable, __file__, "--one", preset, "--render-resolution", str(r),
               "--mesh-resolution", str(m), "--device", args.device]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        x = json.loads(out.strip().splitlines()[-1])
        print(f"| {x['preset']} | {x['plane']} | {x['samples_per_ray']} | {x['planes_s']:.2f} | {x['render_s']:.1f} "
              f"| {x['density_s']:.1f} | {x['surface_s']:.1f} | {x['density_s'] + x['surface_s']:.1f} "
              f"| {x['faces']} | {x['peak_mb']:.0f} |")


if __name__ == "__main__":
    main()
