"""Pose samplers: cameras on the sphere looking at the origin; uniform directions are really uniform."""

from __future__ import annotations

import math

import pytest
import torch

from triplane_gan_ns import registry


def _centre_rays(cameras):
    """Origin and direction of each camera's central pixel ray."""
    res = int(cameras.height[0, 0])
    coords = torch.tensor([[res / 2.0, res / 2.0]])
    origins, directions = [], []
    for i in range(cameras.shape[0]):
        rays = cameras.generate_rays(camera_indices=i, coords=coords)
        origins.append(rays.origins[0])
        directions.append(rays.directions[0])
    return torch.stack(origins), torch.stack(directions)


@pytest.mark.parametrize("name", ["uniform-sphere", "gaussian-frontal"])
def test_central_rays_pass_through_origin_at_radius(name):
    sampler = registry.config("pose_samplers", name, radius=2.7, fov_degrees=30.0).setup()
    cameras = sampler.sample(64, 16, generator=torch.Generator().manual_seed(0))
    origins, directions = _centre_rays(cameras)
    torch.testing.assert_close(origins.norm(dim=-1), torch.full((64,), 2.7))
    # distance from the origin to the line o + t d is |o x d|; and the ray points towards the origin
    assert torch.linalg.cross(origins, directions).norm(dim=-1).max() < 1e-4
    assert ((origins * directions).sum(-1) < 0).all()
    # the focal length matches the field of view
    assert math.isclose(float(cameras.fx[0, 0]), 8 / math.tan(math.radians(15)), rel_tol=1e-5)


def test_uniform_sphere_directions_are_uniform():
    n = 16000
    sampler = registry.config("pose_samplers", "uniform-sphere").setup()
    dirs = sampler.sample_directions(n, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(dirs.norm(dim=-1), torch.ones(n))
    octant = (dirs > 0).long() @ torch.tensor([1, 2, 4])
    counts = torch.bincount(octant, minlength=8).float()
    sd = math.sqrt(n * (1 / 8) * (7 / 8))
    assert (counts - n / 8).abs().max() < 4 * sd, counts
    # Archimedes: the height of a uniform point on the sphere is uniform in [-1, 1] (along every axis)
    for axis in range(3):
        hist = torch.histc(dirs[:, axis], bins=10, min=-1, max=1)
        sd_bin = math.sqrt(n * 0.1 * 0.9)
        assert (hist - n / 10).abs().max() < 4 * sd_bin, hist
    # the poles are reached too (no cap is excluded)
    assert dirs[:, 2].max() > 0.99 and dirs[:, 2].min() < -0.99


def test_gaussian_frontal_stays_around_the_front():
    sampler = registry.config("pose_samplers", "gaussian-frontal", yaw_std_degrees=10.0, pitch_std_degrees=5.0).setup()
    dirs = sampler.sample_directions(4000, generator=torch.Generator().manual_seed(2))
    yaw = torch.rad2deg(torch.atan2(dirs[:, 1], dirs[:, 0]))
    pitch = torch.rad2deg(torch.asin(dirs[:, 2]))
    assert abs(float(yaw.mean())) < 1.0 and abs(float(yaw.std()) - 10.0) < 0.8
    assert abs(float(pitch.mean())) < 0.5 and abs(float(pitch.std()) - 5.0) < 0.4
    assert (dirs[:, 0] > 0).all()


def test_same_generator_seed_gives_same_cameras():
    sampler = registry.config("pose_samplers", "uniform-sphere").setup()
    a = sampler.sample(5, 8, generator=torch.Generator().manual_seed(9)).camera_to_worlds
    b = sampler.sample(5, 8, generator=torch.Generator().manual_seed(9)).camera_to_worlds
    assert torch.equal(a, b)
