"""Analytic 3D shapes (signed distance functions) used as the embedded data set and its ground truth.

World is z-up; every shape is centred at the origin and fits inside ``MAX_RADIUS`` so that it lies well
within the scene box ``[-1, 1]^3``.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

import torch
from jaxtyping import Bool, Float
from torch import Tensor

CLASS_NAMES: Tuple[str, ...] = ("sphere", "cube", "torus", "cylinder")
"""Shape classes, in class-index order."""

MAX_RADIUS = 0.75
"""Every shape produced by :func:`random_shape` lies inside this radius around the origin."""

CUBE_ROUNDING = 0.15
"""Edge rounding radius of the ``cube`` class, as a fraction of its smallest half-extent."""

_SIZE_RANGE: Dict[str, Tuple[float, float]] = {
    "sphere": (0.50, 0.70),
    "cube": (0.32, 0.40),
    "torus": (0.42, 0.52),
    "cylinder": (0.35, 0.46),
}
_ASPECT_RANGE: Dict[str, Tuple[float, float]] = {
    "sphere": (1.0, 1.0),
    "cube": (0.75, 1.25),
    "torus": (0.25, 0.42),
    "cylinder": (0.60, 1.20),
}
_BASE_HUE: Dict[str, float] = {"sphere": 0.0, "cube": 1.0 / 3.0, "torus": 0.64, "cylinder": 0.15}
_HUE_JITTER = 0.025
_SATURATION_RANGE = (0.65, 0.85)
_VALUE_RANGE = (0.75, 0.95)


@dataclass
class Shape:
    """One analytic shape centred at the origin.

    ``size`` and ``aspect`` per kind:

    - ``sphere``: radius ``size`` (``aspect`` ignored).
    - ``cube``: rounded box with half-extents ``(size, size, size * aspect)`` and edge radius
      ``CUBE_ROUNDING * min(half-extents)``.
    - ``torus``: axis z, major radius ``size``, tube radius ``size * aspect``.
    - ``cylinder``: capped, axis z, radius ``size``, half-height ``size * aspect``.
    """

    kind: str
    size: float
    aspect: float = 1.0
    color: Tuple[float, float, float] = (0.8, 0.8, 0.8)
    """Albedo, RGB in [0, 1]."""

    def __post_init__(self) -> None:
        if self.kind not in CLASS_NAMES:
            raise ValueError(f"unknown shape kind {self.kind!r}; known: {', '.join(CLASS_NAMES)}")
        self.size = float(self.size)
        self.aspect = float(self.aspect)
        self.color = tuple(float(c) for c in self.color)  # type: ignore[assignment]

    @property
    def class_index(self) -> int:
        return CLASS_NAMES.index(self.kind)

    @property
    def bounding_radius(self) -> float:
        """Radius of the smallest origin-centred ball containing the shape."""
        s, a = self.size, self.aspect
        if self.kind == "sphere":
            return s
        if self.kind == "cube":
            half = torch.tensor([s, s, s * a], dtype=torch.float64)
            rounding = CUBE_ROUNDING * float(half.min())
            return float(torch.linalg.norm(half - rounding)) + rounding
        if self.kind == "torus":
            return s * (1.0 + a)
        return (s**2 + (s * a) ** 2) ** 0.5

    def sdf(self, points: Float[Tensor, "*bs 3"]) -> Float[Tensor, "*bs"]:
        """Exact signed distance (negative inside)."""
        s, a = self.size, self.aspect
        if self.kind == "sphere":
            return torch.linalg.norm(points, dim=-1) - s
        if self.kind == "cube":
            half = points.new_tensor([s, s, s * a])
            rounding = CUBE_ROUNDING * min(s, s * a)
            q = points.abs() - (half - rounding)
            outside = torch.linalg.norm(q.clamp(min=0.0), dim=-1)
            inside = q.max(dim=-1).values.clamp(max=0.0)
            return outside + inside - rounding
        if self.kind == "torus":
            radial = torch.linalg.norm(points[..., :2], dim=-1) - s
            return torch.sqrt(radial**2 + points[..., 2] ** 2) - s * a
        d = torch.stack(
            [torch.linalg.norm(points[..., :2], dim=-1) - s, points[..., 2].abs() - s * a],
            dim=-1,
        )
        outside = torch.linalg.norm(d.clamp(min=0.0), dim=-1)
        inside = d.max(dim=-1).values.clamp(max=0.0)
        return outside + inside

    def occupancy(self, points: Float[Tensor, "*bs 3"]) -> Bool[Tensor, "*bs"]:
        """True strictly inside the shape."""
        return self.sdf(points) < 0

    def sample_surface(
        self, n: int, generator: Optional[torch.Generator] = None, iterations: int = 8
    ) -> Float[Tensor, "n 3"]:
        """``n`` points on the surface, roughly uniform in area.

        Points drawn uniformly in a thin shell ``|sdf| < band`` around the surface are projected onto it
        with Newton steps ``p <- p - sdf(p) * grad sdf(p)``; the few that fail to converge are discarded.
        """
        band = 0.05
        extent = self.bounding_radius + band
        chunks = []
        have = 0
        while have < n:
            candidates = (torch.rand(max(4 * n, 4096), 3, generator=generator) * 2.0 - 1.0) * extent
            candidates = candidates[self.sdf(candidates).abs() < band]
            with torch.enable_grad():
                p = candidates.clone()
                for _ in range(iterations):
                    p = p.detach().requires_grad_(True)
                    d = self.sdf(p)
                    (grad,) = torch.autograd.grad(d.sum(), p)
                    grad = grad / grad.norm(dim=-1, keepdim=True).clamp(min=1e-12)
                    p = p - d[..., None] * grad
            p = p.detach()
            p = p[self.sdf(p).abs() < 1e-5]
            chunks.append(p)
            have += p.shape[0]
        return torch.cat(chunks, dim=0)[:n]

    def to_dict(self) -> Dict[str, Any]:
        return {"kind": self.kind, "size": self.size, "aspect": self.aspect, "color": list(self.color)}

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "Shape":
        return cls(
            kind=str(data["kind"]),
            size=float(data["size"]),
            aspect=float(data.get("aspect", 1.0)),
            color=tuple(float(c) for c in data.get("color", (0.8, 0.8, 0.8))),  # type: ignore[arg-type]
        )


def _uniform(low: float, high: float, generator: torch.Generator) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator, dtype=torch.float64))


def random_shape(class_index: int, generator: torch.Generator) -> Shape:
    """A random shape of class ``CLASS_NAMES[class_index]``, inside radius ``MAX_RADIUS``.

    The colour has the class's base hue (sphere red, cube green, torus blue, cylinder yellow) with a small
    random jitter in hue, saturation and brightness.  Every class consumes the same number of random draws.
    """
    kind = CLASS_NAMES[class_index]
    size = _uniform(*_SIZE_RANGE[kind], generator)
    aspect = _uniform(*_ASPECT_RANGE[kind], generator)
    hue = (_BASE_HUE[kind] + _uniform(-_HUE_JITTER, _HUE_JITTER, generator)) % 1.0
    saturation = _uniform(*_SATURATION_RANGE, generator)
    value = _uniform(*_VALUE_RANGE, generator)
    color = colorsys.hsv_to_rgb(hue, saturation, value)
    return Shape(kind=kind, size=size, aspect=aspect, color=(color[0], color[1], color[2]))
