"""The 3D generator: backbone (latent -> triplane) + field (triplane -> density/colour) + nerfstudio rendering.

Data flow for a batch of ``B`` latents rendered from ``V`` cameras each::

    z, label --backbone.mapping--> ws --backbone.synthesis--> planes [B, 3, C, R, R]
    cameras (B*V, from a pose sampler) --generate_rays--> rays [B, V*h*w, 3] grouped by latent
    box interval -> uniform coarse samples (no grad) -> importance samples -> TriplaneField (batched planes)
    -> rgb / depth / accumulation + feature image [B*V, F, h, w]        (renderer.py, plain tensors)
    -> optional SuperResolution (h -> output resolution)

All components are built from their configs; the backbone and the field are chosen by registered name.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable, Dict, Literal, Optional, Type

import torch
from jaxtyping import Float, Int
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.cameras.rays import RayBundle
from nerfstudio.configs.base_config import InstantiateConfig
from torch import Tensor, nn

from triplane_gan_ns import registry, renderer
from triplane_gan_ns.backbones.stylegan2 import StyleGAN2BackboneConfig
from triplane_gan_ns.errors import UserError
from triplane_gan_ns.fields.triplane import TriplaneFieldConfig, lookup_layout
from triplane_gan_ns.occupancy import THRESHOLD, OccupancyGrid
from triplane_gan_ns.superresolution import SuperResolutionConfig

RGB = 3
"""Feature channels a preview render needs: the first three are the RGB."""

BackboneChoice = registry.choice_type("backbones")
FieldChoice = registry.choice_type("fields")


@dataclass
class TriplaneGeneratorConfig(InstantiateConfig):
    """Generator = backbone + field + renderer; ``setup(num_classes=..., output_resolution=...)``."""

    _target: Type = dataclasses.field(default_factory=lambda: TriplaneGenerator)
    backbone: BackboneChoice = dataclasses.field(default_factory=StyleGAN2BackboneConfig)  # type: ignore
    """Network from (z, class) to the triplane, by registered name."""
    field: FieldChoice = dataclasses.field(default_factory=TriplaneFieldConfig)  # type: ignore
    """Decoder from plane features to density and colour, by registered name."""
    neural_resolution: int = 64
    """Side of the volume-rendered image; super-resolution lifts it to the data resolution."""
    num_coarse_samples: int = 48
    """Uniform samples per ray (used only to place the importance samples)."""
    num_importance_samples: int = 48
    """Importance (PDF) samples per ray, rendered together with the coarse ones."""
    scene_bound: float = 1.0
    """The scene is the box [-scene_bound, scene_bound]^3; the planes cover it."""
    background: Literal["white", "black"] = "white"
    """Colour behind the object in the rendered RGB."""
    superresolution: SuperResolutionConfig = dataclasses.field(default_factory=SuperResolutionConfig)
    """2D network from the neural rendering to the output resolution (unused when they are equal)."""


def check_neural_resolution(neural_resolution: int, output_resolution: int) -> None:
    """A UserError unless the neural rendering is at most as large as the output (data) images."""
    if output_resolution < neural_resolution:
        raise UserError(
            f"neural_resolution {neural_resolution} exceeds the output (data) resolution "
            f"{output_resolution}; lower --pipeline.model.generator.neural-resolution"
        )


class TriplaneGenerator(nn.Module):
    """Latents and class labels to rendered views (and the planes, for export and inversion)."""

    def __init__(self, config: TriplaneGeneratorConfig, num_classes: int, output_resolution: int) -> None:
        super().__init__()
        self.config = config
        check_neural_resolution(config.neural_resolution, output_resolution)
        self.num_classes = num_classes
        self.output_resolution = output_resolution
        self.backbone = config.backbone.setup(num_classes=num_classes)
        self.field = config.field.setup(plane_channels=self.backbone.plane_channels, scene_bound=config.scene_bound)
        self.superresolution: Optional[nn.Module] = None
        if output_resolution > config.neural_resolution:
            self.superresolution = config.superresolution.setup(
                in_channels=config.field.feature_dim,
                w_dim=self.backbone.w_dim,
                in_resolution=config.neural_resolution,
                out_resolution=output_resolution,
            )

    # ---- latents ----------------------------------------------------------------------------------------
    def mapping(
        self,
        z: Float[Tensor, "batch z_dim"],
        labels: Int[Tensor, "batch"],
        truncation_psi: float = 1.0,
        truncation_cutoff: Optional[int] = None,
        update_w_avg: bool = False,
    ) -> Float[Tensor, "batch num_ws w_dim"]:
        return self.backbone.mapping(z, labels, truncation_psi, truncation_cutoff, update_w_avg=update_w_avg)

    def planes(self, ws: Float[Tensor, "batch num_ws w_dim"], noise_mode: str = "const") -> Tensor:
        return self.backbone.synthesis(ws, noise_mode=noise_mode)

    @torch.no_grad()
    def fixed_planes(self, ws: Float[Tensor, "batch num_ws w_dim"]) -> Float[Tensor, "batch 3 channels res res"]:
        """The planes of latents that many renders will read unchanged (viewer, previews, ``render``, mesh
        export, the geometry measure, ``eval``'s non-flatness score): constant noise, no gradients, and on the
        CPU stored channels-last, so that a texel's features lie side by side (``grid_sample`` then reads the
        paper preset's 32-channel 256² planes 1.6x faster; the values are the same).  Training's planes change
        every step and stay as the backbone makes them."""
        return lookup_layout(self.planes(ws, noise_mode="const"))

    # ---- rendering --------------------------------------------------------------------------------------
    @torch.no_grad()
    def occupancy_grid(self, planes: Float[Tensor, "1 3 channels res res"], resolution: int = 64) -> OccupancyGrid:
        """Where one latent's density can matter (computed once per latent; see ``occupancy.py``)."""
        return OccupancyGrid.from_density(
            lambda points: self.field.batched_density(planes, points[None])[0, :, 0],
            self.config.scene_bound,
            resolution,
            device=planes.device,
        )

    def point_density(
        self, planes: Float[Tensor, "1 3 channels res res"], level: Optional[float] = None
    ) -> Callable[[Float[Tensor, "num 3"]], Float[Tensor, "num"]]:
        """Density of one latent at any points (lattices of the mesh export and the geometry measure).  For a
        surface at ``level`` of at least ``occupancy.THRESHOLD``, points in the empty cells of the latent's
        occupancy grid read zero (their density is below the threshold, so no such surface lies there);
        without a level (a density volume, choosing the level) or below it, every point is evaluated."""
        device = planes.device

        def density(points: Float[Tensor, "num 3"]) -> Float[Tensor, "num"]:
            return self.field.query(planes, points.to(device))[0][..., 0]

        if level is None or level < THRESHOLD:
            return density
        return self.occupancy_grid(planes).skip_empty(density)

    def render_batched(
        self,
        planes: Float[Tensor, "batch 3 channels res res"],
        origins: Float[Tensor, "batch m 3"],
        directions: Float[Tensor, "batch m 3"],
        occupancy: Optional[OccupancyGrid] = None,
        density_transform: Optional[renderer.DensityTransform] = None,
        channels: Optional[int] = None,
    ) -> Dict[str, Float[Tensor, "batch m c"]]:
        """Volume-render ``m`` rays of each latent (unit directions); rgb, features, depth, weighted distance
        and accumulation (see ``renderer.render``).  ``occupancy`` (one latent, no gradients) skips empty space;
        ``density_transform`` rewrites the densities of each latent's samples before compositing; ``channels``
        keeps the first feature channels only (3: the RGB)."""
        c = self.config
        return renderer.render(
            lambda points: self.field.batched(planes, points, channels),
            lambda points: self.field.batched_density(planes, points),
            origins,
            directions,
            bound=c.scene_bound,
            num_coarse=c.num_coarse_samples,
            num_importance=c.num_importance_samples,
            background=c.background,
            stratified=self.training,
            occupancy=occupancy,
            density_transform=density_transform,
        )

    def render_rays(
        self,
        planes: Float[Tensor, "batch 3 channels res res"],
        ray_bundle: RayBundle,
        occupancy: Optional[OccupancyGrid] = None,
    ) -> Dict[str, Tensor]:
        """Volume-render rays of any shape; ``ray_bundle.metadata['latent_index']`` picks each ray's triplane
        (absent: all rays use the single triplane, which ``occupancy`` may describe to skip empty space).
        Returns rgb, features, depth and accumulation per ray; the features are the RGB channels only (the
        decoder skips the others: previews show no more)."""
        shape = ray_bundle.shape
        origins = ray_bundle.origins.reshape(-1, 3)
        directions = ray_bundle.directions.reshape(-1, 3)
        index = (ray_bundle.metadata or {}).get("latent_index")
        if index is None:
            if planes.shape[0] != 1:
                raise ValueError("rays need metadata['latent_index'] when rendering a batch of several triplanes")
            out = self.render_batched(planes, origins[None], directions[None], occupancy, channels=RGB)
            return {k: v[0].reshape(*shape, v.shape[-1]) for k, v in out.items()}
        if occupancy is not None:
            raise ValueError("empty-space skipping renders the rays of one triplane: drop metadata['latent_index']")
        index = index.reshape(-1)
        parts: Dict[str, list] = {}
        order = []
        for b in index.unique().tolist():
            rays = (index == b).nonzero()[:, 0]
            order.append(rays)
            one = self.render_batched(planes[b : b + 1], origins[rays][None], directions[rays][None], channels=RGB)
            for k, v in one.items():
                parts.setdefault(k, []).append(v[0])
        inverse = torch.argsort(torch.cat(order))
        return {k: torch.cat(v)[inverse].reshape(*shape, -1) for k, v in parts.items()}

    @torch.no_grad()
    def render_camera(
        self,
        planes: Float[Tensor, "1 3 channels res res"],
        camera: Cameras,
        rays_per_chunk: int,
        occupancy: Optional[OccupancyGrid] = None,
    ) -> Dict[str, Float[Tensor, "height width c"]]:
        """Every pixel of one camera (at its own size) of one latent, ``rays_per_chunk`` rays at a time, RGB
        only, skipping the empty space that the latent's ``occupancy`` grid marks: ``rgb``, ``depth`` and
        ``accumulation`` as [H, W, C].  What the viewer shows, and the previews and ``render``'s raw views of a
        generator's field (a super-resolving generator's previews and output images go through ``render``)."""
        rays = camera.generate_rays(camera_indices=0, keep_shape=True).to(planes.device)
        h, w = rays.shape[:2]
        flat = rays.flatten()
        chunks: Dict[str, list] = {}
        for start in range(0, flat.shape[0], rays_per_chunk):
            out = self.render_rays(planes, flat[start : start + rays_per_chunk], occupancy)
            for key in ("rgb", "depth", "accumulation"):
                chunks.setdefault(key, []).append(out[key])
        return {k: torch.cat(v).view(h, w, -1) for k, v in chunks.items()}

    @staticmethod
    def camera_rays(cameras: Cameras, latent_index: Int[Tensor, "num_cameras"]) -> RayBundle:
        """All pixel rays of ``cameras`` (same square size), shaped [num_cameras, h, w], tagged with latents."""
        num = cameras.shape[0]
        coords = cameras.get_image_coords().to(cameras.device)  # [h, w, 2] as (y, x)
        h, w = coords.shape[:2]
        camera_indices = torch.arange(num, device=cameras.device).view(num, 1, 1, 1).expand(num, h, w, 1)
        rays = cameras.generate_rays(camera_indices=camera_indices, coords=coords.expand(num, h, w, 2))
        rays.metadata["latent_index"] = latent_index.to(cameras.device).view(num, 1, 1, 1).expand(num, h, w, 1)
        return rays

    def render(
        self,
        ws: Float[Tensor, "batch num_ws w_dim"],
        cameras: Cameras,
        planes: Optional[Tensor] = None,
        noise_mode: str = "random",
    ) -> Dict[str, Tensor]:
        """Render ``len(cameras) = batch * views`` images, latent-major (camera k shows latent k // views).

        Returns images as [N, C, H, W]: ``image`` (output resolution, in [0, 1]), ``image_raw`` (neural
        resolution), ``depth``, ``accumulation``; and ``planes``.
        """
        batch = ws.shape[0]
        num = cameras.shape[0]
        if num % batch != 0:
            raise ValueError(f"{num} cameras cannot be split evenly between {batch} latents")
        if planes is None:
            planes = self.planes(ws, noise_mode=noise_mode)
        views = num // batch
        latent_index = torch.arange(num, device=ws.device) // views
        rays = self.camera_rays(cameras, latent_index)
        h, w = rays.shape[1:3]
        out = self.render_batched(planes, rays.origins.reshape(batch, -1, 3), rays.directions.reshape(batch, -1, 3))
        images = {k: v.reshape(num, h, w, -1).permute(0, 3, 1, 2) for k, v in out.items()}  # [N, C, h, w]
        raw = images["rgb"]
        if self.superresolution is not None:
            features = torch.cat([raw, images["features"][:, 3:]], dim=1)
            image = self.superresolution(raw, features, ws[latent_index, -1])
        else:
            image = raw
        return {
            "image": image,
            "image_raw": raw,
            "depth": images["depth"],
            "accumulation": images["accumulation"],
            "planes": planes,
        }
