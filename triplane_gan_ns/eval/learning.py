"""Does training make the generator more like the data?  Measures that need no discriminator.

* Colour/silhouette distance: for every class, the mean colour of the foreground pixels (pixels that are not
  near-white background) and the fraction of foreground pixels, compared between the EMA generator's images of
  that class and the real images of that class.
* Class separation: the smallest distance between the mean foreground colours of two generated classes
  (the embedded classes have distinct colours, so a generator that ignores its class label scores near 0).
* FD-EffNetLite0 (optional): Fréchet distance between EfficientNet-Lite0 features of generated and real images.

Generated images come from fixed latents and fixed cameras of the model's pose sampler, so measures taken at
different steps of one run are comparable.  Measuring draws from its own ``torch.Generator`` and never from
the global RNG, so it does not change the training run it observes.
"""

from __future__ import annotations

import itertools
import time
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Protocol, Tuple

import torch
from jaxtyping import Float, Int
from torch import Tensor

from triplane_gan_ns.eval.metrics import FD_NAME, features_of_images, frechet_distance

if TYPE_CHECKING:
    from triplane_gan_ns.data.dataset import ClassImageDataset
    from triplane_gan_ns.pretrained.efficientnet_lite0 import EfficientNetLite0Features
    from triplane_gan_ns.model import TriplaneGANModel


class Trainer(Protocol):
    """What the measures need of a trainer (``ns-train``'s GAN trainer is one): its pipeline and one step."""

    pipeline: Any

    def train_iteration(self, step: int) -> Any: ...


BACKGROUND_THRESHOLD = 0.92
"""A pixel whose smallest channel exceeds this is (white) background."""
BACKGROUND_COLOUR = (1.0, 1.0, 1.0)
"""Mean colour reported for a class without any foreground pixel."""


def foreground_mask(
    images: Float[Tensor, "n 3 h w"], threshold: float = BACKGROUND_THRESHOLD
) -> Float[Tensor, "n h w"]:
    """1 where a pixel is not near-white background, else 0."""
    return (images.amin(dim=1) <= threshold).float()


def class_colour_stats(
    images: Float[Tensor, "n 3 h w"], labels: Int[Tensor, "n"], num_classes: int
) -> Tuple[Float[Tensor, "classes 3"], Float[Tensor, "classes"]]:
    """Per class: mean RGB over all its foreground pixels, and its fraction of foreground pixels.

    A class without foreground pixels gets the background colour; a class without images gets NaN.
    """
    images = images.float().clamp(0, 1)
    mask = foreground_mask(images)
    means = torch.full((num_classes, 3), float("nan"))
    fractions = torch.full((num_classes,), float("nan"))
    for c in range(num_classes):
        sel = labels == c
        if not bool(sel.any()):
            continue
        m = mask[sel]
        count = m.sum()
        fractions[c] = m.mean()
        if count > 0:
            means[c] = (images[sel] * m[:, None]).sum(dim=(0, 2, 3)) / count
        else:
            means[c] = torch.tensor(BACKGROUND_COLOUR)
    return means, fractions


def min_pairwise_distance(points: Float[Tensor, "k d"]) -> float:
    """Smallest L2 distance between two rows (0 for fewer than two rows)."""
    pairs = list(itertools.combinations(range(points.shape[0]), 2))
    if not pairs:
        return 0.0
    return min(float(torch.linalg.norm(points[i] - points[j])) for i, j in pairs)


def dataset_images(
    dataset: "ClassImageDataset", num: Optional[int] = None, seed: int = 0
) -> Tuple[Float[Tensor, "n 3 res res"], Int[Tensor, "n"]]:
    """Images [N, 3, R, R] in [0, 1] and labels [N] of a ``ClassImageDataset`` (all, or ``num`` at random)."""
    indices = list(range(len(dataset)))
    if num is not None and num < len(indices):
        order = torch.randperm(len(indices), generator=torch.Generator().manual_seed(seed))
        indices = sorted(order[:num].tolist())
    items = [dataset[i] for i in indices]
    images = torch.stack([item["image"].permute(2, 0, 1) for item in items])
    labels = torch.stack([torch.as_tensor(item["label"]).long() for item in items])
    return images, labels


@torch.no_grad()
def generate_images(
    model: "TriplaneGANModel", num_per_class: int, seed: int = 0, batch_size: int = 16
) -> Tuple[Float[Tensor, "n 3 res res"], Int[Tensor, "n"]]:
    """EMA-generator images of every class from latents and pose-sampler cameras fixed by ``seed`` (CPU tensors).

    Latents and cameras depend only on ``seed``, ``num_per_class`` and the number of classes.
    """
    gen = torch.Generator().manual_seed(seed)
    num_classes = model.num_classes
    labels = torch.arange(num_classes).repeat_interleave(num_per_class)
    z = torch.randn(labels.shape[0], model.generator.backbone.z_dim, generator=gen)
    cameras = model.pose_sampler.sample(labels.shape[0], model.neural_resolution, generator=gen)
    images = []
    for start in range(0, labels.shape[0], batch_size):
        end = min(start + batch_size, labels.shape[0])
        out = model.generate(
            z[start:end].to(model.device),
            labels[start:end].to(model.device),
            cameras=cameras[start:end],
            truncation_psi=1.0,
            noise_mode="const",
            use_ema=True,
        )
        images.append(out["image"].clamp(0, 1).float().cpu())
    return torch.cat(images), labels


@torch.no_grad()
def measure_generator(
    model: "TriplaneGANModel",
    real_images: Float[Tensor, "n 3 res res"],
    real_labels: Int[Tensor, "n"],
    num_per_class: int,
    extractor: Optional["EfficientNetLite0Features"] = None,
    seed: int = 0,
    real_features: Optional[Float[Tensor, "n d"]] = None,
) -> Dict[str, object]:
    """Compare the EMA generator's images with real ones; no discriminator involved.

    Returns ``colour_distance`` (mean over classes of the L2 distance between the mean foreground colours plus
    the absolute difference of the foreground fractions), its two parts ``colour_term`` and ``silhouette_term``,
    ``class_separation`` (smallest distance between the mean foreground colours of two generated classes),
    ``real_class_separation`` (the same for the real images), the per-class statistics, and, with an
    ``extractor``, ``FD-EffNetLite0`` between all generated and all real images (``real_features``: the real
    images' features, if already computed).
    """
    if model.config.generator.background != "white":
        raise ValueError(
            f"the silhouette statistics assume a white background; the generator renders on "
            f"{model.config.generator.background!r}"
        )
    num_classes = model.num_classes
    real_labels = real_labels.long().cpu()
    fake, fake_labels = generate_images(model, num_per_class, seed=seed)
    if fake.shape[-2:] != real_images.shape[-2:]:
        raise ValueError(f"generated images are {tuple(fake.shape[-2:])}, real ones {tuple(real_images.shape[-2:])}")

    real_rgb, real_fg = class_colour_stats(real_images.cpu(), real_labels, num_classes)
    fake_rgb, fake_fg = class_colour_stats(fake, fake_labels, num_classes)
    present = ~torch.isnan(real_fg)
    colour_term = torch.linalg.norm(fake_rgb - real_rgb, dim=1)[present].mean()
    silhouette_term = (fake_fg - real_fg).abs()[present].mean()
    result: Dict[str, object] = {
        "colour_distance": float(colour_term + silhouette_term),
        "colour_term": float(colour_term),
        "silhouette_term": float(silhouette_term),
        "class_separation": min_pairwise_distance(fake_rgb),
        "real_class_separation": min_pairwise_distance(real_rgb[present]),
        "fake_mean_rgb": fake_rgb.tolist(),
        "real_mean_rgb": real_rgb.tolist(),
        "fake_fg_fraction": fake_fg.tolist(),
        "real_fg_fraction": real_fg.tolist(),
    }
    if extractor is not None:
        if real_features is None:
            real_features = features_of_images(extractor, [real_images])
        fake_features = features_of_images(extractor, [fake])
        result[FD_NAME] = frechet_distance(fake_features, real_features)
    return result


def train_and_measure(
    trainer: Trainer,
    steps: int,
    every: int,
    real_images: Float[Tensor, "n 3 res res"],
    real_labels: Int[Tensor, "n"],
    num_per_class: int = 8,
    extractor: Optional["EfficientNetLite0Features"] = None,
    seed: int = 0,
    start_step: int = 0,
    on_row: Optional[Callable[[Dict[str, object]], None]] = None,
) -> List[Dict[str, object]]:
    """Run ``trainer.train_iteration`` for ``steps`` steps, measuring before the first, every ``every`` steps
    and after the last.

    Each row is ``{"step": steps trained, "seconds": training time so far (measuring excluded), **measures}``;
    ``on_row`` is called with each row as soon as it is measured.
    """
    if every < 1:
        raise ValueError(f"every must be >= 1, got {every}")
    real_features = None
    if extractor is not None:
        real_features = features_of_images(extractor, [real_images])
    pipeline = trainer.pipeline
    rows: List[Dict[str, object]] = []
    seconds = 0.0

    def measure(done: int) -> None:
        row: Dict[str, object] = {"step": done, "seconds": seconds}
        row.update(
            measure_generator(
                pipeline.gan_model,
                real_images,
                real_labels,
                num_per_class,
                extractor=extractor,
                seed=seed,
                real_features=real_features,
            )
        )
        rows.append(row)
        if on_row is not None:
            on_row(row)

    measure(0)
    for i in range(steps):
        start = time.perf_counter()
        trainer.train_iteration(start_step + i)
        seconds += time.perf_counter() - start
        done = i + 1
        if done % every == 0 or done == steps:
            measure(done)
    return rows
