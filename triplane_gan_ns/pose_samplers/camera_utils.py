"""Camera helpers shared by pose samplers and data generation (nerfstudio / OpenGL convention, world z-up)."""

from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F
from jaxtyping import Float
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


def uniform_sphere_directions(n: int, generator: Optional[torch.Generator] = None) -> Float[Tensor, "n 3"]:
    """``n`` unit vectors uniformly distributed on the sphere (normalised standard normals)."""
    v = torch.randn(n, 3, generator=generator)
    return F.normalize(v, dim=-1)
