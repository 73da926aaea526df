"""Generator forward+backward time at EG3D's shapes (issue 10, item 2), for a side-by-side with EG3D.

Usage: python benchmarks/eg3d_shapes.py [--batch 2] [--repeats 3] [--threads 2] [--device cpu] [--json]

The generator is the ``triplane-gan`` preset's with EG3D's sizes instead of the paper's:

* backbone ``stylegan2-eg3d`` (no extra blocks), z/w 512, 8 mapping layers, 3x32x256² planes, 10 classes;
* decoder with one hidden layer of 64, 32 feature channels;
* 32² neural rendering, 24 coarse + 24 importance samples per ray, super-resolution to 128²;
* ``batch`` latents, one view each, train mode (stratified samples, random noise).

One step is ``model.generate(z, labels, views_per_latent=1)`` then ``out["image"].sum().backward()`` into all
generator parameters.  One warm-up, then ``--repeats`` timed steps; prints the median (and every time), the
load average and the peak resident set size.  ``build_model`` and ``make_step`` can be imported by a script that
alternates this step with another implementation's in one process.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import time

NUM_CLASSES = 10
OUTPUT_RESOLUTION = 128


def eg3d_shapes_config():
    """The paper preset's model config with EG3D's backbone, decoder, sampling and resolutions."""
    from triplane_gan_ns.backbones.stylegan2 import StyleGAN2EG3DBackboneConfig
    from triplane_gan_ns.fields.triplane import TriplaneFieldConfig
    from triplane_gan_ns.method_configs.triplane_gan import _paper_model

    config = _paper_model()
    gen = config.generator
    gen.backbone = StyleGAN2EG3DBackboneConfig(
        z_dim=512, w_dim=512, mapping_layers=8, plane_channels=32, plane_resolution=256
    )
    gen.field = TriplaneFieldConfig(hidden_dim=64, num_hidden_layers=1, feature_dim=32)
    gen.neural_resolution = 32
    gen.num_coarse_samples = 24
    gen.num_importance_samples = 24
    return config


def build_model(device: str = "cpu", seed: int = 0):
    """The model at EG3D's shapes with random weights on ``device``, in train mode."""
    import torch
    from nerfstudio.data.scene_box import SceneBox

    torch.manual_seed(seed)
    model = eg3d_shapes_config().setup(
        scene_box=SceneBox(aabb=torch.tensor([[-1.0] * 3, [1.0] * 3])),
        num_train_data=1,
        metadata={"class_names": [str(i) for i in range(NUM_CLASSES)], "resolution": OUTPUT_RESOLUTION},
    ).to(device)
    model.train()
    return model


def make_step(model, batch: int = 2, seed: int = 0):
    """A callable running one forward+backward of the generator on ``batch`` fixed latents."""
    import torch

    device = model.device
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(batch, model.generator.backbone.z_dim, generator=gen).to(device)
    labels = (torch.arange(batch) % NUM_CLASSES).to(device)

    def step() -> None:
        model.generator.zero_grad(set_to_none=True)
        out = model.generate(z, labels, views_per_latent=1)
        assert out["image"].shape == (batch, 3, OUTPUT_RESOLUTION, OUTPUT_RESOLUTION)
        out["image"].sum().backward()
        if str(device).startswith("cuda"):
            torch.cuda.synchronize()

    return step


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (0: torch's default)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    args = parser.parse_args()
    import torch

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    model = build_model(args.device)
    built_mb = peak_rss_mb()
    step = make_step(model, args.batch)
    step()  # warm-up
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    gen = model.generator
    result = {
        "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "device": args.device,
        "batch": args.batch,
        "planes": f"3x{gen.backbone.plane_channels}x{gen.backbone.plane_resolution}^2",
        "neural_res": gen.config.neural_resolution,
        "output_res": gen.output_resolution,
        "samples_per_ray": f"{gen.config.num_coarse_samples}+{gen.config.num_importance_samples}",
        "g_params_m": sum(p.numel() for p in gen.parameters()) / 1e6,
        "times_s": times,
        "median_s": statistics.median(times),
        "loadavg": os.getloadavg(),
        "rss_after_build_mb": built_mb,
        "peak_rss_mb": peak_rss_mb(),
    }
    if args.json:
        print(json.dumps(result))
        return
    print(f"machine: {result['machine']}, torch {result['torch']}, threads {result['threads']}, device {args.device}")
    print(f"generator: {result['planes']} planes, {result['neural_res']}² neural rendering with "
          f"{result['samples_per_ray']} samples/ray, SR to {result['output_res']}², {result['g_params_m']:.1f} M params")
    print(f"forward+backward, batch {args.batch}: median {result['median_s']:.3f} s "
          f"(runs: {', '.join(f'{t:.3f}' for t in times)})")
    print(f"load average: {' '.join(f'{x:.2f}' for x in result['loadavg'])}; "
          f"peak RSS {result['peak_rss_mb']:.0f} MB (after building the model: {built_mb:.0f} MB)")


if __name__ == "__main__":
    main()
