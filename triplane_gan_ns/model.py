"""The nerfstudio Model: holds the generator, the discriminator and the pose sampler.

Training losses live in ``training/`` (the pipeline asks this model for images and scores); this model also
renders a preview latent for nerfstudio's viewer and evaluation through the standard Model interface.  The
preview latent is chosen with ``self.controls`` (class, seed, truncation psi), which the viewer shows as GUI
controls; its triplanes are computed once per latent and set of weights.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import math
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple, Type

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.cameras.rays import RayBundle
from nerfstudio.models.base_model import Model, ModelConfig
from torch import Tensor
from torch.nn import Parameter

from triplane_gan_ns import registry
from triplane_gan_ns.discriminators.stylegan2_resnet import StyleGAN2ResnetDiscriminatorConfig
from triplane_gan_ns.generator import TriplaneGeneratorConfig
from triplane_gan_ns.occupancy import OccupancyGrid
from triplane_gan_ns.cameras import orbit_directions, yaw_pitch_directions
from triplane_gan_ns.pose_samplers.base import PoseSampler
from triplane_gan_ns.pose_samplers.uniform_sphere import UniformSpherePoseSamplerConfig
from triplane_gan_ns.superresolution import upsample_bilinear
from triplane_gan_ns.viewer_controls import GeneratorControls, InitialView, PreviewLatent

DiscriminatorChoice = registry.choice_type("discriminators")
PoseSamplerChoice = registry.choice_type("pose_samplers")


@dataclass
class TriplaneGANModelConfig(ModelConfig):
    """A class-conditional triplane GAN."""

    _target: Type = dataclasses.field(default_factory=lambda: TriplaneGANModel)
    generator: TriplaneGeneratorConfig = dataclasses.field(default_factory=TriplaneGeneratorConfig)
    """The 3D generator (backbone, field, rendering)."""
    discriminator: DiscriminatorChoice = dataclasses.field(  # type: ignore
        default_factory=StyleGAN2ResnetDiscriminatorConfig
    )
    """The image discriminator, by registered name."""
    pose_sampler: PoseSamplerChoice = dataclasses.field(  # type: ignore
        default_factory=UniformSpherePoseSamplerConfig
    )
    """Where generated images are rendered from, by registered name."""
    dual_discrimination: bool = True
    """EG3D's dual discrimination: the discriminator sees the super-resolved image stacked with the neural
    rendering upsampled to the same size (6 channels), and real photos stacked with their own copy resized down
    to the neural resolution and back up, so the raw rendering too must look real.  No effect without
    super-resolution (the neural rendering is the image)."""
    preview_class: int = 0
    """Class first shown by the viewer and evaluation renders (then chosen with the viewer's controls)."""
    preview_seed: int = 0
    """Seed of the latent first shown by the viewer and evaluation renders."""
    preview_truncation: float = 0.7
    """Truncation psi of sample grids, and the viewer's initial psi (1 = none)."""
    eval_num_rays_per_chunk: int = 1 << 14
    """Rays rendered at once for full images (viewer, evaluation)."""


class TriplaneGANModel(Model):
    config: TriplaneGANModelConfig

    def populate_modules(self) -> None:
        super().populate_modules()
        metadata = self.kwargs.get("metadata", {}) or {}
        self.class_names: List[str] = list(metadata.get("class_names", []))
        self.num_classes = len(self.class_names)
        self.resolution = int(metadata.get("resolution", self.config.generator.neural_resolution))
        self.generator = self.config.generator.setup(num_classes=self.num_classes, output_resolution=self.resolution)
        # moving average of the generator's weights: samples, the viewer, export and evaluation use it
        self.generator_ema = copy.deepcopy(self.generator).requires_grad_(False).eval()
        self.discriminator = self.config.discriminator.setup(
            resolution=self.resolution, num_classes=self.num_classes, in_channels=6 if self.dual_discrimination else 3
        )
        self.pose_sampler: PoseSampler = self.config.pose_sampler.setup()
        # the viewer's "Custom Elements": which latent get_outputs_for_camera renders
        self.controls = GeneratorControls(
            self.class_names,
            class_index=min(self.config.preview_class, max(self.num_classes - 1, 0)),
            seed=self.config.preview_seed,
            truncation=self.config.preview_truncation,
            initial_view=self._initial_view(),
        )
        self._preview_cache: Optional[Tuple[tuple, Tensor, Tensor, OccupancyGrid]] = None

    @property
    def dual_discrimination(self) -> bool:
        """Whether the discriminator judges the neural rendering too (asked for, and there is super-resolution)."""
        return self.config.dual_discrimination and self.generator.superresolution is not None

    # ---- what the discriminator sees ----------------------------------------------------------------------
    def discriminator_images(
        self, image: Float[Tensor, "b 3 h w"], image_raw: Optional[Float[Tensor, "b 3 hr wr"]] = None
    ) -> Float[Tensor, "b c h w"]:
        """The discriminator's input (before blur and augmentation) for images in [0, 1]: ``image`` alone, or
        with dual discrimination ``image`` stacked with ``image_raw`` bilinearly upsampled to its size."""
        if not self.dual_discrimination:
            return image
        if image_raw is None:
            raise ValueError("dual discrimination needs the neural rendering (image_raw) of every image")
        return torch.cat([image, upsample_bilinear(image_raw, image.shape[-1])], dim=1)

    @staticmethod
    def neural_copy(photo: Float[Tensor, "b 3 h w"], neural_resolution: int) -> Float[Tensor, "b 3 n n"]:
        """A real photo as the neural rendering would show it: antialiased resize to ``neural_resolution``²."""
        size = (neural_resolution, neural_resolution)
        return F.interpolate(photo, size=size, mode="bilinear", align_corners=False, antialias=True)

    def _initial_view(
        self, yaw_degrees: float = 30.0, pitch_degrees: float = 20.0, zoom_out: float = 1.6
    ) -> InitialView:
        """The viewer's first camera: 30 degrees off the front, slightly above, ``zoom_out`` times farther than
        the pose sampler's cameras (whose views the object fills) so that the whole object is in view."""
        yaw, pitch = torch.tensor([math.radians(yaw_degrees)]), torch.tensor([math.radians(pitch_degrees)])
        position = zoom_out * self.pose_sampler.config.radius * yaw_pitch_directions(yaw, pitch)[0]
        return InitialView(tuple(position.tolist()), self.pose_sampler.config.fov_degrees)

    def train(self, mode: bool = True) -> "TriplaneGANModel":
        super().train(mode)
        self.generator_ema.eval()  # deterministic sampling along rays, whatever the phase
        return self

    def get_param_groups(self) -> Dict[str, List[Parameter]]:
        return {
            "generator": list(self.generator.parameters()),
            "discriminator": list(self.discriminator.parameters()),
        }

    # ---- sampling ---------------------------------------------------------------------------------------
    def seeded_latents(self, seeds: Sequence[int]) -> Float[Tensor, "batch z_dim"]:
        zs = [self.generator.backbone.seeded_z(s, self.generator.backbone.z_dim) for s in seeds]
        return torch.cat(zs).to(self.device)

    def generate(
        self,
        z: Float[Tensor, "batch z_dim"],
        labels: Int[Tensor, "batch"],
        views_per_latent: int = 1,
        cameras: Optional[Cameras] = None,
        truncation_psi: float = 1.0,
        update_w_avg: bool = False,
        noise_mode: str = "random",
        generator: Optional[torch.Generator] = None,
        use_ema: bool = False,
        mixing_z: Optional[Float[Tensor, "batch z_dim"]] = None,
        mixing_cutoff: Optional[int] = None,
        neural_resolution: Optional[int] = None,
    ) -> Dict[str, Tensor]:
        """Render ``views_per_latent`` views of each latent (cameras from the pose sampler unless given).

        ``mixing_z``/``mixing_cutoff``: style mixing, layers from ``mixing_cutoff`` on take the second latent's w.
        """
        net = self.generator_ema if use_ema else self.generator
        ws = net.mapping(z, labels, truncation_psi, update_w_avg=update_w_avg)
        if mixing_z is not None and mixing_cutoff is not None:
            ws2 = net.mapping(mixing_z, labels, truncation_psi)
            ws = torch.cat([ws[:, :mixing_cutoff], ws2[:, mixing_cutoff:]], dim=1)
        if cameras is None:
            cameras = self.pose_sampler.sample(
                z.shape[0] * views_per_latent,
                neural_resolution or self.neural_resolution,
                device=self.device,
                generator=generator,
            )
        out = net.render(ws, cameras.to(self.device), noise_mode=noise_mode)
        out["ws"] = ws
        return out

    @property
    def neural_resolution(self) -> int:
        """Side of the volume-rendered images (before super-resolution)."""
        return self.config.generator.neural_resolution

    def cameras(self, directions: Float[Tensor, "num 3"], resolution: Optional[int] = None) -> Cameras:
        """Cameras looking at the object from ``directions`` at the pose sampler's radius and field of view, at
        ``resolution`` (default: the neural resolution, what ``generate`` renders), on the model's device."""
        resolution = self.neural_resolution if resolution is None else resolution
        return self.pose_sampler.cameras_from_directions(directions, resolution).to(self.device)

    def orbit_cameras(
        self, num_views: int, elevation_degrees: float = 20.0, resolution: Optional[int] = None
    ) -> Cameras:
        """Cameras evenly spaced in azimuth around the object at the pose sampler's radius (``resolution``: as
        ``cameras``)."""
        return self.cameras(orbit_directions(num_views, elevation_degrees), resolution)

    def _preview_size(self, resolution: Optional[int]) -> Optional[int]:
        """The rendering size of a preview asked for at ``resolution``: a super-resolving generator's renderings
        must have its neural resolution."""
        return resolution if self.generator.superresolution is None else None

    @torch.no_grad()
    def sample_grid(
        self,
        classes: Optional[Sequence[int]] = None,
        num_views: int = 6,
        seed: int = 0,
        resolution: Optional[int] = None,
    ) -> Float[Tensor, "3 height width"]:
        """One row per class (first 8 by default), one column per azimuth, same seed: a [3, H, W] image.

        ``resolution``: side of each view (default: the neural resolution).  A generator without
        super-resolution renders its field at any size; one with super-resolution always shows its output
        images (``resolution`` does not apply)."""
        if classes is None:
            classes = list(range(min(max(self.num_classes, 1), 8)))
        rows = []
        cameras = self.orbit_cameras(num_views, resolution=self._preview_size(resolution))
        for c in classes:
            views = self._preview_views(c, seed, cameras)
            rows.append(torch.cat(list(views), dim=2))  # [3, H, V*W]
        return torch.cat(rows, dim=1)

    @torch.no_grad()
    def orbit(
        self,
        class_index: int,
        seed: int,
        num_frames: int = 24,
        elevation_degrees: float = 20.0,
        resolution: Optional[int] = None,
    ) -> Tensor:
        """Frames [F, 3, H, W] of one latent seen from a full circle of azimuths (EMA generator; ``resolution``
        as in ``sample_grid``)."""
        return self._preview_views(
            class_index, seed, self.orbit_cameras(num_frames, elevation_degrees, self._preview_size(resolution))
        )

    def _preview_views(self, class_index: int, seed: int, cameras: Cameras) -> Float[Tensor, "views 3 height width"]:
        """One latent of the EMA generator (preview truncation, constant noise) seen by ``cameras``: a
        super-resolving generator's output images, as training renders them; otherwise its field rendered at each
        camera's size as the viewer does (chunks of rays, RGB only, the latent's empty space skipped)."""
        gen = self.generator_ema
        if gen.superresolution is not None:
            z = self.seeded_latents([seed])
            label = torch.tensor([class_index], device=self.device)
            out = self.generate(
                z, label, cameras=cameras, truncation_psi=self.config.preview_truncation, noise_mode="const", use_ema=True
            )
            return out["image"].clamp(0, 1)
        _, planes, occupancy = self._preview_planes(PreviewLatent(class_index, seed, self.config.preview_truncation))
        chunk = self.config.eval_num_rays_per_chunk
        views = [gen.render_camera(planes, cameras[i : i + 1], chunk, occupancy)["rgb"] for i in range(len(cameras))]
        return torch.stack(views).permute(0, 3, 1, 2).clamp(0, 1)

    # ---- nerfstudio Model interface: render the preview latent ------------------------------------------
    def _weights_version(self) -> Optional[tuple]:
        """Changes whenever the EMA generator's weights do: every in-place update (the EMA step, loading a
        checkpoint) bumps a tensor's version counter, and a replaced tensor has new storage."""
        try:
            return tuple(
                (t.data_ptr(), t._version)
                for t in itertools.chain(self.generator_ema.parameters(), self.generator_ema.buffers())
            )
        except RuntimeError:  # inference-mode tensors have no version counter: never reuse planes
            return None

    @torch.no_grad()
    def _preview_planes(self, latent: Optional[PreviewLatent] = None) -> Tuple[Tensor, Tensor, OccupancyGrid]:
        """(ws, triplanes, occupancy grid) of ``latent`` (default: the one the controls select, read once here),
        reused while the latent and the weights stay the same, so chunks of one render and renders of other cameras
        skip the backbone and the empty space (the viewer's frames, a preview's views)."""
        latent = latent if latent is not None else self.controls.current()
        version = self._weights_version()
        key = (latent, str(self.device), version)
        if version is not None and self._preview_cache is not None and self._preview_cache[0] == key:
            return self._preview_cache[1:]
        z = self.seeded_latents([latent.seed])
        label = torch.tensor([min(latent.class_index, max(self.num_classes - 1, 0))], device=self.device)
        ws = self.generator_ema.mapping(z, label, latent.truncation)
        planes = self.generator_ema.fixed_planes(ws)
        occupancy = self.generator_ema.occupancy_grid(planes)
        self._preview_cache = (key, ws, planes, occupancy)
        return ws, planes, occupancy

    def get_outputs(self, ray_bundle: RayBundle) -> Dict[str, Tensor]:
        _, planes, occupancy = self._preview_planes()
        out = self.generator_ema.render_rays(planes, ray_bundle, None if torch.is_grad_enabled() else occupancy)
        return {"rgb": out["rgb"], "depth": out["depth"], "accumulation": out["accumulation"]}

    @torch.no_grad()
    def get_outputs_for_camera(self, camera: Cameras, obb_box=None) -> Dict[str, Tensor]:
        """Render the latent selected by ``self.controls`` from any camera, in chunks; H x W x C outputs."""
        _, planes, occupancy = self._preview_planes()
        return self.generator_ema.render_camera(planes, camera, self.config.eval_num_rays_per_chunk, occupancy)

    def get_loss_dict(self, outputs, batch, metrics_dict=None) -> Dict[str, Tensor]:
        raise NotImplementedError("GAN losses are computed by triplane_gan_ns.training.pipeline.GanPipeline")

    def get_image_metrics_and_images(
        self, outputs: Dict[str, Tensor], batch: Dict[str, Tensor]
    ) -> Tuple[Dict[str, float], Dict[str, Tensor]]:
        return {}, {"rgb": outputs["rgb"], "accumulation": outputs["accumulation"]}
