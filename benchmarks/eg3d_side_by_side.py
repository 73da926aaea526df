"""Our generator beside EG3D's reference implementation at EG3D's shapes, alternating in one process (issue 10,
item 2), in float32 and under bf16 autocast.

Usage: python benchmarks/eg3d_side_by_side.py --eg3d /path/to/eg3d-checkout [--pairs 3] [--threads 2]

EG3D's code is not part of this repository (its licence keeps it out): clone https://github.com/NVlabs/eg3d
anywhere and pass the checkout (the folder holding ``eg3d/training/triplane.py``).  Both generators get the
shapes of ``eg3d_shapes.py``: z/w 512, 8 mapping layers, channel base 32768 / max 512, 3x32x256² planes, decoder
with one hidden layer of 64, 32² neural rendering with 24 + 24 samples per ray, super-resolution to 128², batch 2,
one view per latent, train mode, forward + backward of ``image.sum()`` into every generator parameter.  EG3D is
built as its ``train.py`` builds it (``fused_modconv_default='inference_only'``, ``num_fp16_res=0``, its
SuperresolutionHybrid2X, softplus clamp, generator pose conditioning off); its CUDA kernels fall back to their
reference implementations on the CPU.

Each round runs one step of each variant in turn (ours fp32, EG3D fp32, ours bf16) after one warm-up each; prints
every time, the medians and the ratios EG3D / ours.  "bf16" is ``torch.autocast(dtype=bfloat16)`` around the
forward pass, as ``--mixed-precision True`` runs training; on CPUs without native bf16 (AVX512-BF16 or AMX) it is
slower than fp32, not faster.  EG3D's code has no bf16 path: it sets each block's dtype itself (fp16 only for
``num_fp16_res`` blocks, 0 in its generator) and stops at its own dtype assertions under autocast.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

BATCH = 2


def eg3d_generator(root: Path):
    """EG3D's TriPlaneGenerator at the shapes above, from a checkout at ``root``."""
    package = root / "eg3d"
    if not (package / "training" / "triplane.py").is_file():
        raise SystemExit(f"--eg3d {root}: no eg3d/training/triplane.py there; pass a clone of NVlabs/eg3d")
    sys.path.insert(0, str(package))
    from training.triplane import TriPlaneGenerator  # noqa: E402  (EG3D's module, from the checkout)

    rendering = {
        "image_resolution": 128,
        "disparity_space_sampling": False,
        "clamp_mode": "softplus",
        "superresolution_module": "training.superresolution.SuperresolutionHybrid2X",
        "c_gen_conditioning_zero": True,
        "gpc_reg_prob": None,
        "c_scale": 1.0,
        "superresolution_noise_mode": "none",
        "density_reg": 0.25,
        "density_reg_p_dist": 0.004,
        "reg_type": "l1",
        "decoder_lr_mul": 1.0,
        "sr_antialias": True,
        "depth_resolution": 24,
        "depth_resolution_importance": 24,
        "ray_start": 2.25,
        "ray_end": 3.3,
        "box_warp": 1,
        "avg_camera_radius": 2.7,
        "avg_camera_pivot": [0, 0, 0.2],
    }
    generator = TriPlaneGenerator(
        z_dim=512,
        c_dim=25,
        w_dim=512,
        img_resolution=128,
        img_channels=3,
        sr_num_fp16_res=0,
        mapping_kwargs={"num_layers": 8},
        rendering_kwargs=rendering,
        channel_base=32768,
        channel_max=512,
        num_fp16_res=0,
        fused_modconv_default="inference_only",
    )
    generator.neural_rendering_resolution = 32
    return generator.train()


def eg3d_step(generator, seed: int = 0):
    """One forward + backward of EG3D's generator on fixed latents and cameras (radius 2.7, looking at the
    origin, EG3D's normalised intrinsics with focal 4.26)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(BATCH, 512, generator=gen)
    cam2world = torch.eye(4).repeat(BATCH, 1, 1)
    cam2world[:, 2, 3] = 2.7  # on +z, looking down -z at the origin (OpenCV: flip y and z)
    cam2world[:, 1, 1] = cam2world[:, 2, 2] = -1.0
    intrinsics = torch.tensor([[4.2647, 0.0, 0.5], [0.0, 4.2647, 0.5], [0.0, 0.0, 1.0]]).repeat(BATCH, 1, 1)
    c = torch.cat([cam2world.reshape(BATCH, 16), intrinsics.reshape(BATCH, 9)], dim=1)

    def step() -> None:
        generator.zero_grad(set_to_none=True)
        out = generator(z, c)
        assert out["image"].shape == (BATCH, 3, 128, 128)
        out["image"].float().sum().backward()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--eg3d", type=Path, required=True, help="a clone of https://github.com/NVlabs/eg3d")
    parser.add_argument("--pairs", type=int, default=3, help="timed rounds (each runs every variant once)")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    args = parser.parse_args()
    import torch

    from eg3d_shapes import build_model, make_step

    torch.set_num_threads(args.threads)
    ours_model = build_model("cpu")
    ours = make_step(ours_model, BATCH)
    eg3d = eg3d_generator(args.eg3d.resolve())
    theirs = eg3d_step(eg3d)
    count = lambda module: sum(p.numel() for p in module.parameters()) / 1e6  # noqa: E731
    print(f"generator parameters: ours {count(ours_model.generator):.1f} M, EG3D {count(eg3d):.1f} M")

    def timed(step, bf16: bool) -> float:
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            step()
        return time.perf_counter() - start

    variants = {"ours fp32": (ours, False), "EG3D fp32": (theirs, False), "ours bf16": (ours, True)}
    for step, bf16 in variants.values():  # warm-up
        timed(step, bf16)
    times = {name: [] for name in variants}
    for round_ in range(args.pairs):
        for name, (step, bf16) in variants.items():
            times[name].append(timed(step, bf16))
        print(f"round {round_ + 1}: " + ", ".join(f"{n} {t[-1]:.2f} s" for n, t in times.items()), flush=True)
    medians = {name: statistics.median(t) for name, t in times.items()}
    print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"threads {torch.get_num_threads()}, cpu capability {torch.backends.cpu.get_cpu_capability()}, "
          f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print("medians: " + ", ".join(f"{n} {m:.2f} s" for n, m in medians.items()))
    for ours_name in ("ours fp32", "ours bf16"):
        print(f"EG3D fp32 / {ours_name} = {medians['EG3D fp32'] / medians[ours_name]:.2f}")


if __name__ == "__main__":
    main()
