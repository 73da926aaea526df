"""Where a fixed latent's density can matter: a boolean grid over the scene box, to skip empty space.

For a given latent the triplane does not change, so the viewer, ``render``, ``export-mesh``, ``eval`` and PTI
previews can ask once where the density exceeds ``threshold`` and afterwards evaluate the field only there.
The grid holds the density at every cell centre of a ``resolution³`` lattice; a cell is occupied when the
density at its centre or at one of its 26 neighbours' exceeds a tenth of the threshold (the margin and the
dilation cover density that peaks between centres; a test checks them on a lattice 1.5 times finer).

What skipping costs: a ray that only crosses unoccupied cells loses at most ``1 - exp(-threshold * L)`` of
opacity over a chord of length ``L`` (the default 0.1 and the diagonal of the box ``[-1, 1]^3``: 29 %, a loose
bound: a cell is kept wherever a tenth of the threshold is reached at its centre or a neighbour's).  Trained
generators keep a haze of 1e-3..1e-1 in most of the box and their surfaces far above it: on the four classes
of a ``make demo`` run, at the paper preset's 48 + 48 samples per ray, the images differ from full sampling by
0.19-0.49/255 on average and by 2.1/255 at most, and a 256² frame is 1.8-3.6x faster than at a threshold of 1e-2
(which kept 48-84 % of the box for that haze: 0.01-0.03/255 on average); see docs/benchmarks.md.

The grid also keeps the densities at its cell centres: ``estimate`` interpolates them, a cheap stand-in for the
coarse samples that the renderer skips (so that its importance samples land where full sampling puts them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float
from torch import Tensor

DensityFn = Callable[[Float[Tensor, "n 3"]], Float[Tensor, "n"]]
THRESHOLD = 0.1
"""Density below which space counts as empty (see the module docstring for what skipping it costs)."""


def cell_centres(resolution: int, bound: float, device: torch.device | str = "cpu") -> Float[Tensor, "r r r 3"]:
    """Centres of the ``resolution³`` cells of ``[-bound, bound]^3``, indexed ``[x, y, z]``."""
    axis = (torch.arange(resolution, device=device, dtype=torch.float32) + 0.5) / resolution * 2 * bound - bound
    return torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), dim=-1)


@dataclass
class OccupancyGrid:
    occupied: Bool[Tensor, "r r r"]
    """Cell ``[i, j, k]`` spans ``x`` in ``[-b + i * 2b / r, -b + (i + 1) * 2b / r]``, likewise ``y``, ``z``."""
    bound: float
    density: Optional[Float[Tensor, "r r r"]] = None
    """The density at the cell centres, when built from one (``estimate``)."""

    @classmethod
    @torch.no_grad()
    def from_density(
        cls,
        density: DensityFn,
        bound: float,
        resolution: int = 64,
        threshold: float = THRESHOLD,
        chunk: int = 1 << 18,
        device: torch.device | str = "cpu",
    ) -> "OccupancyGrid":
        """Evaluate ``density`` at the cell centres (``chunk`` points at a time, on ``device``: where the
        density's planes are), mark those above ``threshold / 10`` and dilate by one cell."""
        points = cell_centres(resolution, bound, device).reshape(-1, 3)
        values = torch.cat([density(points[i : i + chunk]).reshape(-1).float() for i in range(0, len(points), chunk)])
        above = (values > threshold / 10).view(1, 1, resolution, resolution, resolution).float()
        occupied = F.max_pool3d(above, kernel_size=3, stride=1, padding=1)[0, 0] > 0
        return cls(occupied, bound, values.view(resolution, resolution, resolution))

    @property
    def resolution(self) -> int:
        return self.occupied.shape[0]

    def to(self, device: torch.device | str) -> "OccupancyGrid":
        return OccupancyGrid(self.occupied.to(device), self.bound, None if self.density is None else self.density.to(device))

    def fraction(self) -> float:
        """Share of the box that is occupied."""
        return float(self.occupied.float().mean())

    def lookup(self, points: Float[Tensor, "*bs 3"]) -> Bool[Tensor, "*bs"]:
        """Whether each point lies in an occupied cell (points outside the box are empty)."""
        r = self.resolution
        inside = (points.abs() <= self.bound).all(dim=-1)  # the box's faces belong to their edge cells
        cell = ((points + self.bound) / (2 * self.bound) * r).floor().long().clamp(0, r - 1)
        flat = (cell[..., 0] * r + cell[..., 1]) * r + cell[..., 2]
        return self.occupied.to(points.device).reshape(-1)[flat] & inside

    def estimate(self, points: Float[Tensor, "*bs 3"]) -> Float[Tensor, "*bs"]:
        """The density trilinearly interpolated between the cell centres (constant beyond the outer centres): a
        cheap stand-in where the field is not evaluated (zero for a grid built without densities)."""
        if self.density is None:
            return points.new_zeros(points.shape[:-1])
        volume = self.density.to(points.device, torch.float32).permute(2, 1, 0)[None, None]  # [1, 1, z, y, x]
        grid = (points.float() / self.bound).reshape(1, 1, 1, -1, 3)
        values = F.grid_sample(volume, grid, mode="bilinear", padding_mode="border", align_corners=False)
        return values.reshape(points.shape[:-1]).to(points.dtype)

    def skip_empty(self, density: DensityFn) -> DensityFn:
        """``density`` evaluated only at points in occupied cells; zero elsewhere."""

        def masked(points: Float[Tensor, "n 3"]) -> Float[Tensor, "n"]:
            needed = self.lookup(points)
            out = points.new_zeros(points.shape[:-1])
            if bool(needed.any()):
                out[needed] = density(points[needed]).reshape(-1).to(out.dtype)
            return out

        return masked
