"""Distances between two sets of image features: Fréchet distance and the kernel (MMD) distance of KID.

On EfficientNet-Lite0 features these are logged as ``FD-EffNetLite0`` and ``KID-EffNetLite0``.  They follow the
definitions of FID and KID but use a different network, so their values are not comparable with Inception
FID/KID numbers from papers.  All arithmetic is float64.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable, List, Optional, Tuple, Union

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

if TYPE_CHECKING:
    from triplane_gan_ns.pretrained.efficientnet_lite0 import EfficientNetLite0Features

FD_NAME = "FD-EffNetLite0"
KID_NAME = "KID-EffNetLite0"

Features = Union[Float[Tensor, "n d"], Float[np.ndarray, "n d"]]


def _as_float64(feats: Features, name: str) -> Float[np.ndarray, "n d"]:
    if isinstance(feats, Tensor):
        feats = feats.detach().to("cpu", torch.float64).numpy()
    feats = np.asarray(feats, dtype=np.float64)
    if feats.ndim != 2:
        raise ValueError(f"{name}: expected features of shape [num_samples, dim], got {feats.shape}")
    if feats.shape[0] < 2:
        raise ValueError(f"{name}: need at least 2 samples, got {feats.shape[0]}")
    if not np.all(np.isfinite(feats)):
        raise ValueError(f"{name}: features contain NaN or infinite values")
    return feats


def _check_same_dim(a: np.ndarray, b: np.ndarray) -> None:
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature dimensions differ: {a.shape[1]} vs {b.shape[1]}")


def feature_moments(feats: Features) -> Tuple[Float[np.ndarray, "d"], Float[np.ndarray, "d d"]]:
    """Mean and unbiased (N - 1) covariance of ``feats``, in float64."""
    x = _as_float64(feats, "feats")
    return x.mean(axis=0), np.cov(x, rowvar=False).reshape(x.shape[1], x.shape[1])


def _psd_sqrt(sigma: Float[np.ndarray, "d d"]) -> Float[np.ndarray, "d d"]:
    """Symmetric square root of a symmetric positive semi-definite matrix (negative round-off eigenvalues -> 0)."""
    eigvals, eigvecs = np.linalg.eigh((sigma + sigma.T) / 2.0)
    return (eigvecs * np.sqrt(np.clip(eigvals, 0.0, None))) @ eigvecs.T


def frechet_distance_from_moments(
    mu_a: Float[np.ndarray, "d"],
    sigma_a: Float[np.ndarray, "d d"],
    mu_b: Float[np.ndarray, "d"],
    sigma_b: Float[np.ndarray, "d d"],
) -> float:
    """Fréchet (2-Wasserstein²) distance between N(mu_a, sigma_a) and N(mu_b, sigma_b).

    ``|mu_a - mu_b|² + tr(sigma_a) + tr(sigma_b) - 2 tr((sigma_a sigma_b)^½)``.  The trace term is computed as
    ``sum(sqrt(eig(S_a^½ sigma_b S_a^½)))`` with ``S_a^½`` the symmetric square root of ``sigma_a``: that matrix
    is symmetric PSD and has the same eigenvalues as ``sigma_a sigma_b``, so ``eigh`` suffices and no complex
    round-off appears (unlike ``sqrtm`` of the non-symmetric product).  The result is clipped at 0.
    """
    mu_a, mu_b = np.asarray(mu_a, np.float64), np.asarray(mu_b, np.float64)
    sigma_a, sigma_b = np.asarray(sigma_a, np.float64), np.asarray(sigma_b, np.float64)
    d = mu_a.shape[0] if mu_a.ndim == 1 else -1
    if mu_a.shape != (d,) or mu_b.shape != (d,) or sigma_a.shape != (d, d) or sigma_b.shape != (d, d):
        raise ValueError(
            f"inconsistent moment shapes: {mu_a.shape}, {sigma_a.shape}, {mu_b.shape}, {sigma_b.shape}"
        )
    sqrt_a = _psd_sqrt(sigma_a)
    middle = sqrt_a @ sigma_b @ sqrt_a
    eigvals = np.linalg.eigvalsh((middle + middle.T) / 2.0)
    trace_sqrt = np.sqrt(np.clip(eigvals, 0.0, None)).sum()
    diff = mu_a - mu_b
    distance = diff @ diff + np.trace(sigma_a) + np.trace(sigma_b) - 2.0 * trace_sqrt
    return float(max(distance, 0.0))


def frechet_distance(feats_a: Features, feats_b: Features) -> float:
    """Fréchet distance between Gaussians fitted (mean, unbiased covariance) to two feature sets.

    With EfficientNet-Lite0 features this is ``FD-EffNetLite0``.  Symmetric, 0 for identical sets.  Like FID it is
    biased upwards for small sets: compare only values computed with the same numbers of samples.
    """
    a = _as_float64(feats_a, "feats_a")
    b = _as_float64(feats_b, "feats_b")
    _check_same_dim(a, b)
    return frechet_distance_from_moments(*feature_moments(a), *feature_moments(b))


def _polynomial_kernel(x: Float[np.ndarray, "n d"], y: Float[np.ndarray, "m d"]) -> Float[np.ndarray, "n m"]:
    """``k(x, y) = (x·y / d + 1)³``, the kernel of KID."""
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def _unbiased_mmd2(x: Float[np.ndarray, "m d"], y: Float[np.ndarray, "m d"]) -> float:
    """Unbiased estimate of MMD² between the distributions of ``x`` and ``y`` (diagonals of k_xx, k_yy left out)."""
    m = x.shape[0]
    k_xx = _polynomial_kernel(x, x)
    k_yy = _polynomial_kernel(y, y)
    k_xy = _polynomial_kernel(x, y)
    within_x = (k_xx.sum() - np.trace(k_xx)) / (m * (m - 1))
    within_y = (k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
    return float(within_x + within_y - 2.0 * k_xy.mean())


def kid(
    feats_a: Features,
    feats_b: Features,
    num_subsets: int = 100,
    subset_size: int = 1000,
    seed: Optional[int] = 0,
) -> Tuple[float, float]:
    """Kernel distance of KID: mean and std of the unbiased MMD² over random subsets.

    Each of ``num_subsets`` rounds draws ``subset_size`` samples without replacement from each set (capped at the
    smaller set's size) and computes the unbiased MMD² with the cubic polynomial kernel
    ``k(x, y) = (x·y / d + 1)³``.  Returns ``(mean, std)`` over the rounds; the estimator is unbiased, so the mean
    can be slightly negative when both sets come from the same distribution.  With EfficientNet-Lite0 features
    this is ``KID-EffNetLite0``.  ``seed`` fixes the subsets (``None``: fresh randomness).
    """
    a = _as_float64(feats_a, "feats_a")
    b = _as_float64(feats_b, "feats_b")
    _check_same_dim(a, b)
    if num_subsets < 1:
        raise ValueError(f"num_subsets must be >= 1, got {num_subsets}")
    m = min(subset_size, a.shape[0], b.shape[0])
    if m < 2:
        raise ValueError(f"subset_size must be >= 2, got {subset_size}")
    rng = np.random.default_rng(seed)
    estimates = np.array(
        [
            _unbiased_mmd2(a[rng.choice(a.shape[0], m, replace=False)], b[rng.choice(b.shape[0], m, replace=False)])
            for _ in range(num_subsets)
        ]
    )
    return float(estimates.mean()), float(estimates.std())


@torch.no_grad()
def features_of_images(
    extractor: "EfficientNetLite0Features",
    images_iterable: Iterable[Float[Tensor, "*b 3 h w"]],
    batch_size: int = 32,
) -> Float[Tensor, "n d"]:
    """Features of every image of ``images_iterable``, as one CPU float32 tensor in input order.

    Items are single images ``[3, h, w]`` or batches ``[b, 3, h, w]`` with values in [0, 1]; sizes may differ
    between items (each is resized to the extractor's input first).  The extractor runs on batches of
    ``batch_size`` images.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    pending: List[Tensor] = []
    num_pending = 0
    outputs: List[Tensor] = []

    def run_batches(final: bool) -> None:
        nonlocal pending, num_pending
        batch = torch.cat(pending)
        end = batch.shape[0] if final else batch.shape[0] - batch.shape[0] % batch_size
        for start in range(0, end, batch_size):
            outputs.append(extractor(batch[start : min(start + batch_size, end)]).float().cpu())
        pending = [batch[end:]] if end < batch.shape[0] else []
        num_pending = batch.shape[0] - end

    for item in images_iterable:
        images = item.unsqueeze(0) if item.ndim == 3 else item
        images = extractor.resize(images.to(device=extractor.device, dtype=torch.float32))
        pending.append(images)
        num_pending += images.shape[0]
        if num_pending >= batch_size:
            run_batches(final=False)
    if num_pending:
        run_batches(final=True)
    if not outputs:
        return torch.zeros(0, extractor.feature_dim)
    return torch.cat(outputs)
