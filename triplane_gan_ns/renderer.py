"""Volume rendering of triplanes with plain tensors, rays grouped by latent.

Rays come as ``origins``/``directions`` of shape ``[B, M, 3]``: the ``M`` rays of latent ``b`` all read
triplane ``b``, so the field samples every plane with one batched 2D ``grid_sample`` (no per-sample latent
index, no ray/sample containers).  The arithmetic is nerfstudio's, step for step, so renders match its
``AABBBoxCollider`` + ``UniformSampler`` + ``PDFSampler(include_original=True)`` + RGB/depth/accumulation
renderers (and draw the same random numbers in training):

1. near/far of every ray from the box ``[-bound, bound]^3`` (slab method);
2. coarse pass, no gradients: ``num_coarse`` stratified uniform samples, density only;
3. importance pass: ``num_importance + 1`` samples from the coarse weights' PDF, merged with the coarse bin
   edges (``num_coarse + num_importance + 1`` samples per ray), density and colour features with gradients;
4. compositing: weights ``T_i (1 - exp(-sigma_i delta_i))``, colour over the background, features, expected
   depth and opacity.

An optional ``density_transform`` rewrites the densities of both passes before they are composited (for
example ``zero_below_quantile``, which the non-flatness score of ``eval`` uses); without it nothing changes.

For a fixed latent (no gradients, one latent) an ``OccupancyGrid`` skips work: both passes evaluate the field
only at samples in occupied cells and only in front of the point where the transmittance falls below ``1e-5``
(early ray termination: the coarse pass goes front to back a few samples at a time and stops a ray there; the
importance pass skips samples behind that point of the coarse pass).  Skipped importance samples get zero
density; skipped coarse samples get the grid's estimate (the density interpolated between its cell centres), so
that the importance samples land about where full sampling puts them.
"""


from __future__ import annotations

from typing import Callable, Dict, Optional, Tuple

import torch
from jaxtyping import Float
from torch import Tensor

from triplane_gan_ns.occupancy import OccupancyGrid

BACKGROUNDS = {"white": 1.0, "black": 0.0}
MAX_OPTICAL_DEPTH = 11.5
"""Samples behind this much coarse optical depth (transmittance below 1e-5) are not evaluated."""
COARSE_SEGMENT = 8
"""Coarse samples per ray evaluated at a time when skipping: a ray stops once its transmittance is spent."""

DensityFn = Callable[[Float[Tensor, "b m 3"]], Float[Tensor, "b m 1"]]
FieldFn = Callable[[Float[Tensor, "b m 3"]], Tuple[Float[Tensor, "b m 1"], Float[Tensor, "b m f"]]]
DensityTransform = Callable[[Float[Tensor, "b m s"]], Float[Tensor, "b m s"]]
"""Densities of the ``s`` samples of the ``m`` rays of each of ``b`` latents -> new densities, same shape."""


def box_intersection(
    origins: Float[Tensor, "*rays 3"], directions: Float[Tensor, "*rays 3"], bound: float
) -> Tuple[Float[Tensor, "*rays 1"], Float[Tensor, "*rays 1"]]:
    """Distances where each ray enters and leaves ``[-bound, bound]^3`` (a miss gets ``far = near + 1e-6``)."""
    inverse = 1.0 / (directions + 1e-6)
    t0 = (-bound - origins) * inverse
    t1 = (bound - origins) * inverse
    near = torch.minimum(t0, t1).amax(dim=-1, keepdim=True).clamp(min=0.0)
    far = torch.maximum(t0, t1).amin(dim=-1, keepdim=True)
    return near, torch.maximum(far, near + 1e-6)


def uniform_bins(num_rays: int, num_samples: int, stratified: bool, device: torch.device) -> Float[Tensor, "rays n1"]:
    """``num_samples + 1`` bin edges in [0, 1] per ray, jittered within their strata when ``stratified``."""
    bins = torch.linspace(0.0, 1.0, num_samples + 1, device=device)[None]
    if stratified:
        jitter = torch.rand((num_rays, num_samples + 1), dtype=bins.dtype, device=device)
        centres = (bins[..., 1:] + bins[..., :-1]) / 2.0
        upper = torch.cat([centres, bins[..., -1:]], -1)
        lower = torch.cat([bins[..., :1], centres], -1)
        return lower + (upper - lower) * jitter
    return bins.expand(num_rays, num_samples + 1)


def importance_bins(
    bins: Float[Tensor, "rays n1"], weights: Float[Tensor, "rays n"], num_samples: int, stratified: bool
) -> Float[Tensor, "rays n1+k1"]:
    """``num_samples + 1`` edges drawn from the piecewise-constant PDF of ``weights`` over ``bins`` (inverse
    transform sampling, padded histogram), merged and sorted with ``bins``; no gradients."""
    num_bins = num_samples + 1
    weights = weights + 0.01
    total = weights.sum(dim=-1, keepdim=True)
    padding = torch.relu(1e-5 - total)
    weights = weights + padding / weights.shape[-1]
    pdf = weights / (total + padding)
    cdf = torch.minimum(torch.ones_like(pdf), torch.cumsum(pdf, dim=-1))
    cdf = torch.cat([torch.zeros_like(cdf[..., :1]), cdf], dim=-1)
    u = torch.linspace(0.0, 1.0 - 1.0 / num_bins, steps=num_bins, device=cdf.device)
    if stratified:
        u = u.expand(*cdf.shape[:-1], num_bins) + torch.rand((*cdf.shape[:-1], num_bins), device=cdf.device) / num_bins
    else:
        u = (u + 1.0 / (2 * num_bins)).expand(*cdf.shape[:-1], num_bins)
    u = u.contiguous()
    index = torch.searchsorted(cdf, u, side="right")
    below = torch.clamp(index - 1, 0, bins.shape[-1] - 1)
    above = torch.clamp(index, 0, bins.shape[-1] - 1)
    cdf0, cdf1 = torch.gather(cdf, -1, below), torch.gather(cdf, -1, above)
    bins0, bins1 = torch.gather(bins, -1, below), torch.gather(bins, -1, above)
    t = torch.clip(torch.nan_to_num((u - cdf0) / (cdf1 - cdf0), 0), 0, 1)
    new = bins0 + t * (bins1 - bins0)
    return torch.sort(torch.cat([bins, new], -1), -1)[0].detach()


def _where_needed(fn, points: Float[Tensor, "1 p 3"], needed: Tensor) -> Tuple[Tensor, ...]:
    """``fn`` evaluated at the needed points of one latent; zeros elsewhere."""
    index = needed[0].nonzero()[:, 0]
    values = fn(points[:, index])
    out = []
    for v in values:
        full = v.new_zeros(1, points.shape[1], v.shape[-1])
        full[:, index] = v
        out.append(full)
    return tuple(out)


def _coarse_front_to_back(
    density: DensityFn,
    points: Float[Tensor, "1 p 3"],
    occupancy: OccupancyGrid,
    deltas: Float[Tensor, "1 m n"],
) -> Float[Tensor, "1 m n"]:
    """Coarse densities of one latent's ``m`` rays, ``COARSE_SEGMENT`` samples per ray at a time from front to
    back, evaluated only in occupied cells and only on rays whose optical depth so far is below
    ``MAX_OPTICAL_DEPTH`` (behind that depth a sample's weight is below 1e-5); elsewhere the grid's estimate, so
    that the importance samples land where full sampling puts them."""
    b, m, n = deltas.shape
    points = points.view(b, m, n, 3)
    needed = occupancy.lookup(points)
    out = occupancy.estimate(points).to(deltas.dtype)
    optical = deltas.new_zeros(b, m)
    for start in range(0, n, COARSE_SEGMENT):
        segment = slice(start, start + COARSE_SEGMENT)
        index = (needed[..., segment] & (optical < MAX_OPTICAL_DEPTH)[..., None]).nonzero(as_tuple=True)
        if index[0].numel() > 0:
            out[..., segment][index] = density(points[..., segment, :][index][None]).reshape(-1).to(out.dtype)
        optical = optical + (out[..., segment] * deltas[..., segment]).sum(dim=-1)
    return out


def zero_below_quantile(quantile: float) -> DensityTransform:
    """A ``density_transform`` that sets each latent's densities below their ``quantile`` (over all samples of
    all its rays, linear interpolation between sample values) to zero."""

    def transform(density: Float[Tensor, "b m s"]) -> Float[Tensor, "b m s"]:
        flat = density.reshape(density.shape[0], -1)
        level = torch.stack([torch.quantile(row.float(), quantile).to(row) for row in flat])
        return torch.where(density < level[:, None, None], torch.zeros_like(density), density)

    return transform


def sample_weights(density: Float[Tensor, "*rays n"], deltas: Float[Tensor, "*rays n"]) -> Float[Tensor, "*rays n"]:
    """Compositing weights ``T_i * (1 - exp(-sigma_i delta_i))`` with ``T_i = exp(-sum_{j<i} sigma_j delta_j)``."""
    optical = deltas * density
    alpha = 1 - torch.exp(-optical)
    before = torch.cumsum(optical[..., :-1], dim=-1)
    transmittance = torch.exp(-torch.cat([torch.zeros_like(before[..., :1]), before], dim=-1))
    return torch.nan_to_num(alpha * transmittance)


class Rays:
    """Rays of ``B`` latents, ``M`` each, with their box interval: ``positions(t)`` of distances ``[B, M, S]``."""

    def __init__(self, origins: Float[Tensor, "b m 3"], directions: Float[Tensor, "b m 3"], bound: float) -> None:
        self.origins = origins
        self.directions = directions
        self.near, self.far = box_intersection(origins, directions, bound)

    def distances(self, bins: Float[Tensor, "b m s1"]) -> Float[Tensor, "b m s1"]:
        return bins * self.far + (1 - bins) * self.near

    def midpoints(self, edges: Float[Tensor, "b m s1"]) -> Tuple[Float[Tensor, "b m*s 3"], Float[Tensor, "b m s"]]:
        """Sample points at the bin midpoints, flattened per latent, and the bins' lengths."""
        mid = (edges[..., :-1] + edges[..., 1:]) / 2
        points = self.origins[..., None, :] + self.directions[..., None, :] * mid[..., None]
        b, m, s, _ = points.shape
        return points.reshape(b, m * s, 3), edges[..., 1:] - edges[..., :-1]


def render(
    field: FieldFn,
    density: DensityFn,
    origins: Float[Tensor, "b m 3"],
    directions: Float[Tensor, "b m 3"],
    bound: float,
    num_coarse: int,
    num_importance: int,
    background: str = "white",
    stratified: bool = False,
    occupancy: Optional[OccupancyGrid] = None,
    density_transform: Optional[DensityTransform] = None,
) -> Dict[str, Tensor]:
    """Render ``M`` rays of each of ``B`` latents.  ``field(points)`` gives (density, features) and
    ``density(points)`` density alone, both for points ``[B, P, 3]`` grouped by latent.

    Returns ``rgb`` (first three feature channels composited over ``background``), ``features``, ``depth``
    (expected distance along the ray, divided by the opacity), ``weighted_distance`` (``sum_i w_i t_i``, not
    divided: it falls towards 0 on transparent rays) and ``accumulation``, each ``[B, M, C]``.  Outside
    training (``stratified=False``) colours are made finite and clamped to [0, 1], as nerfstudio's renderer
    does.  ``occupancy``: skip empty space (see the module docstring); only without gradients and for one
    latent.  ``density_transform``: applied to the coarse densities (so the importance samples follow the
    transformed field) and to the rendered ones.
    """
    b, m, _ = origins.shape
    if occupancy is not None and (b != 1 or torch.is_grad_enabled()):
        raise ValueError("empty-space skipping renders one latent without gradients")
    rays = Rays(origins, directions, bound)
    with torch.no_grad():
        coarse = uniform_bins(b * m, num_coarse, stratified, origins.device).view(b, m, num_coarse + 1)
        points, coarse_deltas = rays.midpoints(rays.distances(coarse))
        if occupancy is None:
            coarse_density = density(points).view(b, m, num_coarse)
        else:
            coarse_density = _coarse_front_to_back(density, points, occupancy, coarse_deltas)
        if density_transform is not None:
            coarse_density = density_transform(coarse_density)
        coarse_weights = sample_weights(coarse_density, coarse_deltas)
    fine = importance_bins(coarse.view(b * m, -1), coarse_weights.view(b * m, -1), num_importance, stratified)
    edges = rays.distances(fine.view(b, m, -1))
    points, deltas = rays.midpoints(edges)
    num = edges.shape[-1] - 1
    if occupancy is None:
        sigma, features = field(points)
    else:
        # coarse optical depth at the start of the coarse bin holding each sample: a lower bound of its own
        optical = torch.cumsum(coarse_density * coarse_deltas, dim=-1)
        optical = torch.cat([torch.zeros_like(optical[..., :1]), optical], dim=-1)  # at the coarse edges
        mid = (fine[..., :-1] + fine[..., 1:]).view(b, m, num) / 2
        bin_index = (torch.searchsorted(coarse.contiguous(), mid.contiguous(), right=True) - 1).clamp(0, num_coarse)
        alive = torch.gather(optical, -1, bin_index) < MAX_OPTICAL_DEPTH
        sigma, features = _where_needed(field, points, occupancy.lookup(points) & alive.view(b, m * num))
    sigma = sigma.view(b, m, num)
    if density_transform is not None:
        sigma = density_transform(sigma)
    weights = sample_weights(sigma, deltas)  # [b, m, s]
    features = features.view(b, m, num, -1)
    if not stratified:
        features = torch.nan_to_num(features)
    composited = (weights[..., None] * features).sum(dim=-2)
    accumulation = weights.sum(dim=-1, keepdim=True)
    rgb = composited[..., :3] + BACKGROUNDS[background] * (1.0 - accumulation)
    if not stratified:
        rgb = rgb.clamp(0.0, 1.0)
    steps = (edges[..., :-1] + edges[..., 1:]) / 2
    weighted_distance = (weights * steps).sum(dim=-1, keepdim=True)
    depth = torch.clip(weighted_distance / (accumulation + 1e-10), steps.min(), steps.max())
    return {
        "rgb": rgb,
        "features": composited,
        "depth": depth,
        "weighted_distance": weighted_distance,
        "accumulation": accumulation,
    }
