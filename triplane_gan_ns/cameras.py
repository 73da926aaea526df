"""Cameras, in one place: nerfstudio's OpenGL convention (a camera looks down its local -z axis, +y up), world z up,
square pinhole images.

* ``look_at``: camera-to-world matrices of cameras at given points looking at a target;
* ``focal_from_fov``: the focal length in pixels of a square image with a given field of view;
* ``make_cameras``: nerfstudio ``Cameras`` from camera-to-world matrices, a resolution and a field of view;
* ``yaw_pitch_directions``, ``orbit_directions`` and ``uniform_sphere_directions``: directions from the scene
  centre towards cameras (yaw is the azimuth about +z with 0 = +x, the front; pitch the elevation above the xy
  plane).

Pose samplers turn directions into cameras at their radius and field of view
(``PoseSampler.cameras_from_directions``); the model adds its own neural resolution (``model.cameras``), so a
caller asks for views of latents from directions and never looks a resolution up.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F
from jaxtyping import Float
from nerfstudio.cameras.cameras import Cameras, CameraType
from torch import Tensor

Vec3 = Union[Float[Tensor, "*bs 3"], Sequence[float]]


def look_at(
    eye: Float[Tensor, "*bs 3"],
    target: Vec3 = (0.0, 0.0, 0.0),
    up: Vec3 = (0.0, 0.0, 1.0),
) -> Float[Tensor, "*bs 3 4"]:
    """Camera-to-world ``[R | t]`` for a camera at ``eye`` looking at ``target``.

    The camera looks down its local -z axis with local +y up and +x right.  Where the viewing direction is
    (anti)parallel to ``up`` (``|cos| > 0.999``) the up vector is replaced by +y (or +x when the view itself
    runs along y), so cameras at the poles get a well-defined orientation.
    """
    if not isinstance(eye, Tensor):
        eye = torch.as_tensor(eye, dtype=torch.float32)
    if not eye.is_floating_point():
        eye = eye.float()
    target_t = torch.as_tensor(target, dtype=eye.dtype, device=eye.device).expand_as(eye)
    up_t = F.normalize(torch.as_tensor(up, dtype=eye.dtype, device=eye.device).expand_as(eye), dim=-1)

    forward = F.normalize(target_t - eye, dim=-1)
    unit_y = torch.tensor([0.0, 1.0, 0.0], dtype=eye.dtype, device=eye.device).expand_as(eye)
    unit_x = torch.tensor([1.0, 0.0, 0.0], dtype=eye.dtype, device=eye.device).expand_as(eye)
    fallback = torch.where(((forward * unit_y).sum(-1).abs() > 0.999)[..., None], unit_x, unit_y)
    parallel = (forward * up_t).sum(-1).abs() > 0.999
    up_t = torch.where(parallel[..., None], fallback, up_t)

    right = F.normalize(torch.linalg.cross(forward, up_t, dim=-1), dim=-1)
    true_up = torch.linalg.cross(right, forward, dim=-1)
    rotation = torch.stack([right, true_up, -forward], dim=-1)
    return torch.cat([rotation, eye[..., None]], dim=-1)


def focal_from_fov(resolution: int, fov_degrees: float) -> float:
    """Focal length in pixels of a square ``resolution``² image whose field of view is ``fov_degrees``."""
    return 0.5 * resolution / math.tan(math.radians(fov_degrees) / 2.0)


def make_cameras(
    camera_to_worlds: Float[Tensor, "num 3 4"], resolution: int, fov_degrees: float
) -> Cameras:
    """Square pinhole nerfstudio cameras (OpenGL convention: the camera looks down its -z axis)."""
    focal = focal_from_fov(resolution, fov_degrees)
    num = camera_to_worlds.shape[0]
    ones = torch.ones(num, 1, device=camera_to_worlds.device)
    return Cameras(
        camera_to_worlds=camera_to_worlds,
        fx=ones * focal,
        fy=ones * focal,
        cx=ones * (resolution / 2.0),
        cy=ones * (resolution / 2.0),
        width=torch.full((num, 1), resolution, dtype=torch.long, device=camera_to_worlds.device),
        height=torch.full((num, 1), resolution, dtype=torch.long, device=camera_to_worlds.device),
        camera_type=CameraType.PERSPECTIVE,
    )


def yaw_pitch_directions(yaw: Float[Tensor, "num"], pitch: Float[Tensor, "num"]) -> Float[Tensor, "num 3"]:
    """Directions from yaw (azimuth about +z, 0 = +x, the front) and pitch (elevation above the xy plane)."""
    return torch.stack(
        [torch.cos(pitch) * torch.cos(yaw), torch.cos(pitch) * torch.sin(yaw), torch.sin(pitch)], dim=-1
    )


def orbit_directions(num_views: int, elevation_degrees: float = 20.0, closed: bool = False) -> Float[Tensor, "n 3"]:
    """Directions at azimuths ``k * 360 / num_views`` and one elevation; ``closed`` adds ``k = num_views``, the very
    same direction as ``k = 0`` (so an orbit's last frame equals its first)."""
    k = torch.arange(num_views + (1 if closed else 0))
    yaw = (k % num_views).float() * (2 * math.pi / num_views)
    return yaw_pitch_directions(yaw, torch.full_like(yaw, math.radians(elevation_degrees)))


def uniform_sphere_directions(n: int, generator: Optional[torch.Generator] = None) -> Float[Tensor, "n 3"]:
    """``n`` unit vectors uniformly distributed on the sphere (normalised standard normals)."""
    v = torch.randn(n, 3, generator=generator)
    return F.normalize(v, dim=-1)
