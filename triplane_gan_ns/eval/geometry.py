"""Geometry metrics that need no pretrained network.

* Multi-view consistency: the pixels of view A are lifted to 3D with A's rendered depth, projected into view B,
  and compared with what B rendered there.  A 3D-consistent generator scores ~0 colour error and ~0 depth
  error; a generator that paints view-dependent 2D images does not.  Occluded points (B sees something
  nearer) and points outside B's image are left out; ``coverage`` is the fraction of A's opaque pixels used.
* Opacity statistics of renders (mean opacity, fraction of semi-transparent "fog" pixels) and of the density
  field (fraction of the box occupied).
* For data with known shapes (the embedded renders, mesh renders): each generated object aligned to each true
  shape, in ``triplane_gan_ns/alignment.py`` (below the tools: training logs it too).
"""

from __future__ import annotations

from typing import Dict

import torch
import torch.nn.functional as F
from jaxtyping import Float
from nerfstudio.cameras.cameras import Cameras
from torch import Tensor

from triplane_gan_ns.generator import TriplaneGenerator


OPAQUE = 0.5
"""A pixel whose accumulated opacity exceeds this is opaque."""


def camera_rays(cameras: Cameras) -> tuple[Float[Tensor, "n h w 3"], Float[Tensor, "n h w 3"]]:
    """Origins and unit directions of every pixel ray of ``cameras`` (pixel centres), ``[N, H, W, 3]`` each."""
    rays = TriplaneGenerator.camera_rays(cameras, torch.zeros(cameras.shape[0], dtype=torch.long))
    return rays.origins, rays.directions / rays.directions.norm(dim=-1, keepdim=True)


def project(points: Float[Tensor, "n k 3"], cameras: Cameras) -> tuple[Float[Tensor, "n k 2"], Float[Tensor, "n k"]]:
    """Pixel coordinates (u right, v down; pixel i spans [i, i+1]) and distance from the camera centre of world
    points in nerfstudio's OpenGL cameras (looking down local -z, +y up).  Distance is negative behind."""
    c2w = cameras.camera_to_worlds.to(points)
    rotation, centre = c2w[:, :, :3], c2w[:, :, 3]
    local = torch.einsum("nji,nkj->nki", rotation, points - centre[:, None])  # R^T (p - t)
    depth_z = -local[..., 2]
    fx, fy = cameras.fx.to(points), cameras.fy.to(points)
    cx, cy = cameras.cx.to(points), cameras.cy.to(points)
    z = depth_z.clamp(min=1e-8)
    u = cx + fx * local[..., 0] / z
    v = cy - fy * local[..., 1] / z
    distance = local.norm(dim=-1) * torch.sign(depth_z)
    return torch.stack([u, v], dim=-1), distance


def _sample(image: Float[Tensor, "n c h w"], uv: Float[Tensor, "n k 2"], mode: str) -> Float[Tensor, "n k c"]:
    h, w = image.shape[-2:]
    grid = torch.stack([uv[..., 0] / w * 2 - 1, uv[..., 1] / h * 2 - 1], dim=-1)[:, :, None]
    return F.grid_sample(image, grid, mode=mode, padding_mode="border", align_corners=False)[..., 0].permute(0, 2, 1)


def reprojection_errors(
    rgb_a: Float[Tensor, "n 3 h w"],
    depth_a: Float[Tensor, "n 1 h w"],
    opacity_a: Float[Tensor, "n 1 h w"],
    cameras_a: Cameras,
    rgb_b: Float[Tensor, "n 3 h w"],
    depth_b: Float[Tensor, "n 1 h w"],
    opacity_b: Float[Tensor, "n 1 h w"],
    cameras_b: Cameras,
    occlusion_tolerance: float = 0.05,
) -> Dict[str, float]:
    """Warp view A into view B through A's depth; compare colours and depths where B sees the same surface.

    Depths are distances along unit rays (nerfstudio's expected depth).  ``occlusion_tolerance`` is relative to
    the depth: a point farther from B than B's depth by more than this is hidden in B and left out.
    Returns ``colour_l1`` (mean absolute RGB difference), ``depth_rel`` (mean |distance - depth_B| / depth_B) and
    ``coverage`` (fraction of A's opaque pixels compared).  A's points that float in front of B's surface count
    in ``depth_rel``; points behind it count as hidden, so depth that is too far lowers ``coverage`` instead.
    """
    n, _, h, w = rgb_a.shape
    origins, directions = camera_rays(cameras_a)
    points = (origins + directions * depth_a.permute(0, 2, 3, 1)).reshape(n, h * w, 3)
    opaque = (opacity_a.reshape(n, h * w) > OPAQUE)
    uv, distance = project(points, cameras_b)
    inside = (uv[..., 0] >= 0) & (uv[..., 0] <= w) & (uv[..., 1] >= 0) & (uv[..., 1] <= h) & (distance > 0)
    # depth and opacity from the nearest pixel: interpolating across a silhouette would mix in the background
    seen_depth = _sample(depth_b, uv, "nearest")[..., 0]
    seen_opacity = _sample(opacity_b, uv, "nearest")[..., 0]
    visible = (distance <= seen_depth * (1 + occlusion_tolerance)) & (seen_opacity > OPAQUE)
    used = opaque & inside & visible
    count = int(used.sum())
    if count == 0:
        return {"colour_l1": float("nan"), "depth_rel": float("nan"), "coverage": 0.0}
    colour_a = rgb_a.reshape(n, 3, h * w).permute(0, 2, 1)
    colour_b = _sample(rgb_b, uv, "bilinear")
    colour_l1 = (colour_a - colour_b).abs().mean(dim=-1)[used].mean()
    depth_rel = ((distance - seen_depth).abs() / seen_depth.clamp(min=1e-6))[used].mean()
    return {
        "colour_l1": float(colour_l1),
        "depth_rel": float(depth_rel),
        "coverage": count / max(int(opaque.sum()), 1),
    }


def opacity_statistics(opacity: Float[Tensor, "n 1 h w"]) -> Dict[str, float]:
    """Mean accumulated opacity and the fraction of semi-transparent pixels (opacity in [0.1, 0.9])."""
    fog = ((opacity >= 0.1) & (opacity <= 0.9)).float().mean()
    return {"mean_opacity": float(opacity.mean()), "semi_transparent_fraction": float(fog)}
