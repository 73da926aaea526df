"""Geometry metrics against analytic scenes: a textured sphere seen from two cameras, spheres of known radii."""

from __future__ import annotations

import math

import pytest
import torch

from triplane_gan_ns.data.shapes import Shape
from triplane_gan_ns.eval.geometry import (
    camera_rays,
    chamfer_distance,
    lattice_points,
    match_to_shapes,
    occupancy_iou,
    opacity_statistics,
    project,
    reprojection_errors,
)
from triplane_gan_ns.pose_samplers.base import make_cameras, yaw_pitch_directions
from triplane_gan_ns.pose_samplers.camera_utils import look_at

RADIUS = 0.5
FAR = 10.0


def _cameras(yaw_degrees, resolution=48):
    yaw = torch.tensor([math.radians(y) for y in yaw_degrees])
    eyes = 2.5 * yaw_pitch_directions(yaw, torch.full_like(yaw, 0.3))
    return make_cameras(look_at(eyes), resolution, 40.0)


def _texture(points):
    return (torch.sin(3 * points) + 1) / 2


def _render_sphere(cameras, texture=_texture):
    """Analytic ray-sphere renders: (rgb, depth, opacity) as [N, C, H, W]."""
    origins, directions = camera_rays(cameras)
    b = (origins * directions).sum(-1)
    c = (origins * origins).sum(-1) - RADIUS**2
    disc = b * b - c
    hit = disc > 0
    t = torch.where(hit, -b - disc.clamp(min=0).sqrt(), torch.full_like(b, FAR))
    points = origins + directions * t[..., None]
    rgb = torch.where(hit[..., None], texture(points), torch.ones_like(points))
    return rgb.permute(0, 3, 1, 2), t[:, None], hit[:, None].float()


def test_projection_inverts_the_pixel_rays():
    cameras = _cameras([0, 70])
    origins, directions = camera_rays(cameras)
    points = (origins + 1.7 * directions).reshape(2, -1, 3)
    uv, distance = project(points, cameras)
    h, w = 48, 48
    v, u = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    torch.testing.assert_close(uv, torch.stack([u, v], -1).reshape(1, -1, 2).expand(2, -1, -1), atol=1e-3, rtol=0)
    torch.testing.assert_close(distance, torch.full_like(distance, 1.7), atol=1e-4, rtol=0)


def test_a_consistent_scene_reprojects_without_error():
    a, b = _cameras([10]), _cameras([40])
    errors = reprojection_errors(*_render_sphere(a), a, *_render_sphere(b), b)
    assert errors["colour_l1"] < 0.02 and errors["depth_rel"] < 0.01, errors
    # a sphere seen 30 degrees apart: most, not all, of A's visible surface is visible from B
    assert 0.6 < errors["coverage"] < 0.97, errors


def test_view_dependent_paint_and_wrong_depth_are_caught():
    a, b = _cameras([10]), _cameras([40])
    painted = reprojection_errors(*_render_sphere(a), a, *_render_sphere(b, lambda p: _texture(p.roll(1, -1))), b)
    assert painted["colour_l1"] > 0.1, painted
    rgb, depth, opacity = _render_sphere(a)
    consistent = reprojection_errors(rgb, depth, opacity, a, *_render_sphere(b), b)
    floating = reprojection_errors(rgb, depth * 0.9, opacity, a, *_render_sphere(b), b)
    assert floating["depth_rel"] > 0.05, floating  # in front of the surface B sees: a depth error
    sunk = reprojection_errors(rgb, depth * 1.1, opacity, a, *_render_sphere(b), b)
    assert sunk["coverage"] < 0.5 * consistent["coverage"], sunk  # behind it: hidden, so less coverage


def test_opacity_statistics():
    opacity = torch.tensor([0.0, 0.05, 0.5, 0.95, 1.0]).view(1, 1, 1, 5)
    stats = opacity_statistics(opacity)
    assert stats == pytest.approx({"mean_opacity": 0.5, "semi_transparent_fraction": 0.2})


def test_iou_and_chamfer_of_concentric_spheres_are_analytic():
    points = lattice_points(64, 1.0)
    inner, outer = Shape(kind="sphere", size=0.4), Shape(kind="sphere", size=0.6)
    iou = occupancy_iou(inner.occupancy(points), outer.occupancy(points))
    assert iou == pytest.approx((0.4 / 0.6) ** 3, abs=0.03)
    gen = torch.Generator().manual_seed(0)
    a, b = inner.sample_surface(3000, generator=gen), outer.sample_surface(3000, generator=gen)
    assert chamfer_distance(a, b) == pytest.approx(0.2, abs=0.01)
    assert chamfer_distance(a, a) == 0.0
    same = match_to_shapes(inner.occupancy(points), a, [outer.occupancy(points), inner.occupancy(points)], [b, a])
    assert same == {"iou": 1.0, "chamfer": 0.0}
