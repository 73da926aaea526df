"""3DGP's Non-Flatness Score (NFS): how far a generator's depth maps are from a flat plane.

A generator that paints its objects onto a plane facing the camera gets high image scores with no 3D shape;
NFS catches it.  Protocol (``triplane-gan eval --metrics nfs``):

1. ``--num-nfs`` latents (random z, classes drawn from the data's class frequencies, as in training), each
   volume-rendered at the neural resolution from one frontal camera (yaw 0, the pose sampler's mean elevation,
   radius and field of view).
2. While rendering, each image's densities below their median (the 50 % quantile over all samples of that
   image's rays) are set to 0 (``renderer.zero_below_quantile``), so a thin haze does not count as depth.
3. Depth per pixel is ``sum_i w_i t_i`` (volume-rendering weights, *not* divided by the accumulated opacity),
   clamped to the ray's ``[near, far]`` interval in the scene box.
4. Per image: a 64-bin histogram of its depths over ``[near, far]`` of the image (the smallest near and largest
   far of its rays); the score of the image is ``exp(entropy)`` of the normalised histogram (natural log).
   NFS is the mean over images.

A flat plane at constant depth fills one bin and scores 1; depths spread evenly over ``k`` bins score ``k``
(at most 64).
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from jaxtyping import Float, Int
from nerfstudio.cameras.cameras import Cameras
from torch import Tensor

from triplane_gan_ns.generator import TriplaneGenerator
from triplane_gan_ns.cameras import yaw_pitch_directions
from triplane_gan_ns.pose_samplers.base import PoseSampler
from triplane_gan_ns.renderer import box_intersection, zero_below_quantile

METRICS = ("nfs",)
"""Names that ``triplane-gan eval --metrics`` accepts for this module; the value is logged as ``NFS``."""
NFS_NAME = "NFS"
NUM_BINS = 64
DENSITY_QUANTILE = 0.5


def per_image_non_flatness(
    depth: Float[Tensor, "n h w"],
    near: Float[Tensor, "n"],
    far: Float[Tensor, "n"],
    num_bins: int = NUM_BINS,
) -> Float[Tensor, "n"]:
    """``exp(entropy)`` (natural log) of the normalised ``num_bins``-bin histogram of each depth map over its
    image's ``[near, far]``; depths outside it count in the end bins."""
    n = depth.shape[0]
    flat = depth.reshape(n, -1).double()
    low, high = near.double().reshape(n, 1), far.double().reshape(n, 1)
    index = ((flat - low) / (high - low).clamp(min=1e-12) * num_bins).floor().long().clamp(0, num_bins - 1)
    counts = torch.zeros(n, num_bins, dtype=torch.float64, device=depth.device).scatter_add_(1, index, torch.ones_like(flat))
    p = counts / counts.sum(dim=1, keepdim=True)
    entropy = -torch.where(p > 0, p * p.log(), torch.zeros_like(p)).sum(dim=1)
    return entropy.exp()


def non_flatness_score(
    depth: Float[Tensor, "n h w"], near: Float[Tensor, "n"], far: Float[Tensor, "n"], num_bins: int = NUM_BINS
) -> float:
    """NFS of depth maps: the mean of ``per_image_non_flatness`` over the images."""
    return float(per_image_non_flatness(depth, near, far, num_bins).mean())


def frontal_camera(pose_sampler: PoseSampler, resolution: int) -> Cameras:
    """One camera looking at the scene centre from the front (+x, yaw 0) at the sampler's mean elevation
    (``pitch_mean_degrees`` where it has one, else 0), radius and field of view."""
    pitch = math.radians(getattr(pose_sampler.config, "pitch_mean_degrees", 0.0))
    direction = yaw_pitch_directions(torch.zeros(1), torch.full((1,), pitch))
    return pose_sampler.cameras_from_directions(direction, resolution)


@torch.no_grad()
def frontal_depths(
    generator: TriplaneGenerator, ws: Float[Tensor, "b num_ws w_dim"], camera: Cameras
) -> tuple[Float[Tensor, "b h w"], Float[Tensor, "b"], Float[Tensor, "b"]]:
    """Depth maps of the latents ``ws`` from ``camera`` (one camera) as step 2-3 of the module docstring,
    with each image's histogram range ``near``, ``far``."""
    device = ws.device
    rays = generator.camera_rays(camera.to(device), torch.zeros(1, dtype=torch.long, device=device))
    h, w = rays.shape[1:3]
    origins = rays.origins.reshape(1, -1, 3)
    directions = rays.directions.reshape(1, -1, 3)
    directions = directions / directions.norm(dim=-1, keepdim=True)
    near, far = box_intersection(origins, directions, generator.config.scene_bound)  # [1, m, 1]
    b = ws.shape[0]
    planes = generator.fixed_planes(ws)
    out = generator.render_batched(
        planes,
        origins.expand(b, -1, -1),
        directions.expand(b, -1, -1),
        density_transform=zero_below_quantile(DENSITY_QUANTILE),
    )
    depth = torch.maximum(torch.minimum(out["weighted_distance"], far), near)[..., 0]  # [b, m]
    hit = (far - near)[0, :, 0] > 2e-6  # rays that miss the box count at the near end
    low = near[0, hit, 0].min() if hit.any() else near.min()
    high = far[0, hit, 0].max() if hit.any() else far.max()
    depth = torch.where(hit[None], depth, low)
    return depth.reshape(b, h, w), low.expand(b), high.expand(b)


@torch.no_grad()
def generator_non_flatness(
    generator: TriplaneGenerator,
    pose_sampler: PoseSampler,
    data_labels: Int[Tensor, "num_data"],
    num: int,
    batch_size: int,
    seed: int,
    truncation: float = 1.0,
    resolution: Optional[int] = None,
) -> float:
    """NFS of ``num`` latents drawn from ``seed`` (classes with the frequencies of ``data_labels``), rendered
    ``batch_size`` at a time at ``resolution`` (default: the generator's neural resolution)."""
    device = next(generator.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    labels = data_labels.cpu()[torch.randint(len(data_labels), (num,), generator=gen)]
    z = torch.randn(num, generator.backbone.z_dim, generator=gen)
    camera = frontal_camera(pose_sampler, resolution or generator.config.neural_resolution)
    scores = []
    for start in range(0, num, batch_size):
        part = slice(start, start + batch_size)
        ws = generator.mapping(z[part].to(device), labels[part].to(device), truncation)
        scores.append(per_image_non_flatness(*frontal_depths(generator, ws, camera)))
    return float(torch.cat(scores).mean())
