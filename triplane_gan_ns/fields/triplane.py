"""The triplane field: three axis-aligned feature planes decoded by an MLP into density and colour features.

Plane order and axes (world coordinates normalised by the scene bound to [-1, 1]):

* plane 0 = XY: grid_sample's (u, v) = (x, y)
* plane 1 = XZ: (u, v) = (x, z)
* plane 2 = YZ: (u, v) = (y, z)

(EG3D's planes are effectively XY/XZ/ZX; we use the three distinct coordinate planes on purpose.)

A batch of different triplanes is handled in one call: points come grouped by latent, ``[B, M, 3]``, and the
``3 * B`` planes are read with one batched 2D ``grid_sample`` (bilinear, zero outside the planes); points of
arbitrary latents (``latent_index``) are grouped first.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Literal, Optional, Tuple, Type

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from nerfstudio.cameras.rays import RaySamples
from nerfstudio.configs.base_config import InstantiateConfig
from nerfstudio.field_components.field_heads import FieldHeadNames
from nerfstudio.fields.base_field import Field
from torch import Tensor

from triplane_gan_ns.fields.decoder import Decoder

PLANE_AXES = ((0, 1), (0, 2), (1, 2))
"""For each plane, which world axes give its (u, v) coordinates."""
_PLANE_SLICES = tuple(slice(u, v + 1, v - u) for u, v in PLANE_AXES)
"""``PLANE_AXES`` as basic slices of the last axis (views, not advanced-indexing gathers)."""
FEATURES = "features"
"""Output key of the full colour features of each sample."""


def lookup_layout(planes: Float[Tensor, "batch 3 channels res res"]) -> Float[Tensor, "batch 3 channels res res"]:
    """The same planes, stored channels-last on the CPU (each texel's features side by side in memory), where
    ``grid_sample`` reads 32-channel 256² planes 1.6x faster at the same values; unchanged on other devices."""
    if planes.device.type != "cpu":
        return planes
    b, three, c, r, _ = planes.shape
    return planes.reshape(b * three, c, r, r).contiguous(memory_format=torch.channels_last).view(b, three, c, r, r)


@dataclass
class TriplaneFieldConfig(InstantiateConfig):
    """Decoder of plane features; ``setup(plane_channels=..., scene_bound=...)`` builds it."""

    _target: Type = field(default_factory=lambda: TriplaneField)
    aggregation: Literal["mean", "sum"] = "mean"
    """How the three plane features of a point are combined."""
    hidden_dim: int = 64
    """Width of the decoder's hidden layers."""
    num_hidden_layers: int = 3
    """Hidden layers of the decoder (EG3D uses 1; the paper makes it deeper); equalised learning rate."""
    feature_dim: int = 32
    """Colour feature channels per sample; the first 3 are the raw RGB (sigmoid), all feed super-resolution."""
    density_shift: float = -1.0
    """Density is softplus(raw + density_shift)."""


class TriplaneField(Field):
    """Samples planes at 3D points and decodes (density, colour features).  Density is zero outside the box."""

    def __init__(self, config: TriplaneFieldConfig, plane_channels: int, scene_bound: float = 1.0) -> None:
        super().__init__()
        self.config = config
        self.plane_channels = plane_channels
        self.scene_bound = scene_bound
        self.decoder = Decoder(plane_channels, config.hidden_dim, config.num_hidden_layers, 1 + config.feature_dim)

    # ---- the core, independent of nerfstudio's ray containers -------------------------------------------
    def sample_planes(
        self, planes: Float[Tensor, "batch 3 channels res res"], positions: Float[Tensor, "batch num 3"]
    ) -> Float[Tensor, "batch 3 channels num"]:
        """Bilinear features of each latent's points on that latent's three planes (zero outside the planes)."""
        batch, _, channels, res, _ = planes.shape
        num = positions.shape[1]
        normed = positions / self.scene_bound
        uv = torch.stack([normed[..., axes] for axes in _PLANE_SLICES], dim=1)  # [B, 3, N, 2], one copy
        sampled = F.grid_sample(
            planes.reshape(batch * 3, channels, res, res),
            uv.reshape(batch * 3, 1, num, 2),
            mode="bilinear",
            padding_mode="zeros",
            align_corners=False,
        )
        return sampled.view(batch, 3, channels, num)

    def _aggregate(self, plane_features: Float[Tensor, "batch 3 channels num"]) -> Float[Tensor, "batch num channels"]:
        agg = plane_features.mean(dim=1) if self.config.aggregation == "mean" else plane_features.sum(dim=1)
        return agg.transpose(1, 2)

    def _density(self, raw: Float[Tensor, "*bs 1"], positions: Float[Tensor, "*bs 3"]) -> Float[Tensor, "*bs 1"]:
        """Activated density from the decoder's raw output: shift, softplus, zero outside the box."""
        inside = (positions.abs() <= self.scene_bound).all(dim=-1, keepdim=True)
        return F.softplus(raw + self.config.density_shift) * inside

    def batched(
        self,
        planes: Float[Tensor, "batch 3 channels res res"],
        positions: Float[Tensor, "batch num 3"],
        channels: Optional[int] = None,
    ) -> Tuple[Float[Tensor, "batch num 1"], Float[Tensor, "batch num feature_dim"]]:
        """Density (zero outside the box) and colour features (the first three channels in [0, 1] are the
        RGB) of ``num`` points of each latent.  ``channels``: only the first ``channels`` features (3: the RGB,
        all a preview shows), skipping the decoder's rows and activations of the others."""
        outputs = slice(None) if channels is None else slice(0, 1 + channels)
        out = self.decoder(self._aggregate(self.sample_planes(planes, positions)), outputs=outputs)
        features = torch.sigmoid(out[..., 1:]) * (1 + 2e-3) - 1e-3
        return self._density(out[..., :1], positions), features

    def batched_density(
        self, planes: Float[Tensor, "batch 3 channels res res"], positions: Float[Tensor, "batch num 3"], raw: bool = False
    ) -> Float[Tensor, "batch num 1"]:
        """Density alone: the decoder's output layer is evaluated for its density row only.  ``raw``: the
        decoder's output before the shift and softplus, not masked by the box (what EG3D regularises)."""
        out = self.decoder(self._aggregate(self.sample_planes(planes, positions)), outputs=slice(0, 1))
        return out if raw else self._density(out, positions)

    def query(
        self,
        planes: Float[Tensor, "batch 3 channels res res"],
        positions: Float[Tensor, "*bs 3"],
        latent_index: Optional[Int[Tensor, "*bs"]] = None,
    ) -> Tuple[Float[Tensor, "*bs 1"], Float[Tensor, "*bs feature_dim"]]:
        """Density and features at arbitrary points of the latents ``latent_index`` (for export and tests)."""
        shape = positions.shape[:-1]
        flat = positions.reshape(-1, 3)
        if latent_index is None:
            if planes.shape[0] != 1:
                raise ValueError("latent_index is required when querying a batch of several triplanes")
            density, features = self.batched(planes, flat[None])
            return density.reshape(*shape, 1), features.reshape(*shape, -1)
        index = latent_index.reshape(-1).to(flat.device).long()
        density = flat.new_zeros(flat.shape[0], 1)
        features = flat.new_zeros(flat.shape[0], self.config.feature_dim)
        for b in index.unique().tolist():
            mask = index == b
            d, f = self.batched(planes[b : b + 1], flat[mask][None])
            density, features = density.index_put((mask,), d[0]), features.index_put((mask,), f[0])
        return density.reshape(*shape, 1), features.reshape(*shape, -1)

    # ---- the nerfstudio Field interface (the planes travel alongside the samples) ------------------------
    def _latent_index(self, ray_samples: RaySamples) -> Optional[Tensor]:
        meta = ray_samples.metadata or {}
        if "latent_index" not in meta:
            return None
        positions_shape = ray_samples.frustums.starts.shape[:-1]
        return meta["latent_index"][..., 0].expand(positions_shape)

    def get_density(  # type: ignore[override]
        self, ray_samples: RaySamples, planes: Optional[Tensor] = None
    ) -> Tuple[Float[Tensor, "*bs 1"], Float[Tensor, "*bs feature_dim"]]:
        assert planes is not None, "TriplaneField needs the planes: field(ray_samples, planes)"
        positions = ray_samples.frustums.get_positions()
        return self.query(planes, positions, self._latent_index(ray_samples))

    def get_outputs(  # type: ignore[override]
        self, ray_samples: RaySamples, density_embedding: Optional[Tensor] = None
    ) -> Dict[FieldHeadNames | str, Tensor]:
        assert density_embedding is not None
        return {FieldHeadNames.RGB: density_embedding[..., :3], FEATURES: density_embedding}

    def forward(  # type: ignore[override]
        self, ray_samples: RaySamples, planes: Tensor
    ) -> Dict[FieldHeadNames | str, Tensor]:
        """Density, RGB and the full colour features (under ``FEATURES``) for every sample."""
        density, features = self.get_density(ray_samples, planes)
        outputs = self.get_outputs(ray_samples, density_embedding=features)
        outputs[FieldHeadNames.DENSITY] = density
        return outputs
