"""``triplane-gan eval`` (``evaluate``): image metrics (FID/KID/IS, FD/KID-EffNetLite0), the non-flatness score (NFS) and
geometry metrics of a trained run.

Protocol (docs/evaluation.md): ``--num-gen`` images from the EMA generator, class-balanced (image i shows class
i mod num_classes), latents and cameras (from the model's pose sampler) drawn from ``--seed``, constant noise,
truncation ``--truncation`` (1 = none); against ``--num-real`` real images (all by default) of ``--data`` (the
run's training data by default) at the model's resolution.  Real features are cached per data set, resolution,
sample and network.  NFS (``--metrics nfs``, ``eval/flatness.py``) renders ``--num-nfs`` latents from a frontal
camera.  Results go to ``eval-step-<step>.json`` next to ``config.yml`` and to the run's tensorboard log
(``Eval/<metric>``).
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

import torch
from nerfstudio.utils.rich_utils import CONSOLE
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch import Tensor

from triplane_gan_ns.data.dataset import ClassImageDataset
from triplane_gan_ns.data.embedded import default_cache_dir
from triplane_gan_ns.errors import UserError
from triplane_gan_ns import alignment
from triplane_gan_ns.eval import fidelity, flatness, geometry
from triplane_gan_ns.eval.fidelity import (
    EFFNET_METRICS,
    INCEPTION_METRICS,
    METRICS,
    EffNetFeatures,
    InceptionFeatures,
    compute_metrics,
    per_class_metrics,
)
from triplane_gan_ns.latents import check_truncation, resolve_device
from triplane_gan_ns.runs import load_model, read_run_config
from triplane_gan_ns.model import TriplaneGANModel
from triplane_gan_ns.cameras import yaw_pitch_directions
from triplane_gan_ns.fileio import atomic_write

GEOMETRY_YAW_OFFSET = math.radians(30.0)
"""Azimuth between the two views of the multi-view consistency metric."""
REAL_CACHE_VERSION = 2
"""Bumped when the cached real-feature files change layout (2: they hold the images' class labels)."""


EVAL_METRICS = METRICS + flatness.METRICS
"""Names accepted by ``--metrics``."""


def parse_metrics(text: str) -> Tuple[str, ...]:
    names = tuple(m.strip().lower() for m in text.split(",") if m.strip())
    if names == ("none",):
        return ()
    unknown = [m for m in names if m not in EVAL_METRICS]
    if unknown or not names:
        raise UserError(f"unknown metric {', '.join(unknown) or repr(text)}; choose from {', '.join(EVAL_METRICS)} or none")
    return names


def _progress() -> Progress:
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    return Progress(*columns, console=CONSOLE)


# ---- images -------------------------------------------------------------------------------------------------
def generated_batches(
    model: TriplaneGANModel, num: int, batch_size: int, seed: int, truncation: float
) -> Iterator[Tensor]:
    """Class-balanced EMA-generator images [b, 3, R, R] in [0, 1]; image i shows class i mod num_classes.

    Latents and cameras depend only on ``seed`` and the batch (not on the device or earlier batches)."""
    for start in range(0, num, batch_size):
        gen = torch.Generator().manual_seed(seed * 1_000_003 + start)
        count = min(batch_size, num - start)
        labels = (torch.arange(start, start + count) % model.num_classes).to(model.device)
        z = torch.randn(count, model.generator.backbone.z_dim, generator=gen).to(model.device)
        cameras = model.pose_sampler.sample(count, model.neural_resolution, generator=gen)
        with torch.no_grad():
            out = model.generate(z, labels, cameras=cameras, truncation_psi=truncation, noise_mode="const", use_ema=True)
        yield out["image"].clamp(0, 1).float()


def real_dataset(parser_config, data: Optional[Path], resolution: int) -> ClassImageDataset:
    """The real images of ``data`` (or of the run's training data) through the run's dataparser config."""
    if data is not None:
        if not Path(data).exists():
            raise UserError(f"--data {data} does not exist; pass an image folder, archive or renders folder")
        parser_config.data = Path(data)
    outputs = parser_config.setup().get_dataparser_outputs("train")
    return ClassImageDataset(outputs, resolution)


def real_subset(dataset: ClassImageDataset, num: Optional[int], seed: int) -> List[int]:
    if num is None or num >= len(dataset):
        return list(range(len(dataset)))
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))
    return sorted(order[:num].tolist())


def real_batches(
    dataset: ClassImageDataset, indices: List[int], batch_size: int, skipped: List[str], labels: List[int]
) -> Iterator[Tensor]:
    """Real images [b, 3, R, R] in [0, 1]; unreadable files are left out and listed in ``skipped``, the class
    labels of the images yielded are appended to ``labels``."""
    for start in range(0, len(indices), batch_size):
        items = [dataset[i] for i in indices[start : start + batch_size]]
        skipped.extend(item["error"] for item in items if not item["valid"])
        labels.extend(int(item["label"]) for item in items if item["valid"])
        good = [item["image"].permute(2, 0, 1) for item in items if item["valid"]]
        if good:
            yield torch.stack(good)


def extract(extractors: Dict[str, torch.nn.Module], batches: Iterator[Tensor], total: int, what: str) -> Dict[str, Dict[str, Tensor]]:
    """Features of every batch under every extractor, concatenated: ``{extractor: {name: [n, d]}}``."""
    parts: Dict[str, Dict[str, List[Tensor]]] = {name: {} for name in extractors}
    with _progress() as bar:
        task = bar.add_task(what, total=total)
        for images in batches:
            for name, net in extractors.items():
                for key, value in net(images).items():
                    parts[name].setdefault(key, []).append(value)
            bar.advance(task, images.shape[0])
    return {name: {k: torch.cat(v) for k, v in feats.items()} for name, feats in parts.items()}


def real_cache_key(dataset: ClassImageDataset, indices: List[int], extractor: str) -> str:
    """Identifies the real features: files (paths, sizes, modification times), resolution, subset, network."""
    files = [Path(p) for p in dataset.image_filenames]
    stats = [(str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) if p.exists() else (str(p), -1, -1) for p in files]
    payload = json.dumps([stats, dataset.resolution, indices, extractor, REAL_CACHE_VERSION])
    return hashlib.sha1(payload.encode("utf-8")).hexdigest()[:16]


def features_sha256(features: Dict[str, Tensor]) -> str:
    """sha256 of named feature tensors (names, dtypes, shapes and values), the same for cached and fresh ones."""
    digest = hashlib.sha256()
    for key in sorted(features):
        value = features[key].detach().cpu().contiguous()
        digest.update(f"{key}:{value.dtype}:{tuple(value.shape)};".encode("utf-8"))
        digest.update(value.numpy().tobytes())
    return digest.hexdigest()


def real_features(
    extractors: Dict[str, torch.nn.Module], dataset: ClassImageDataset, indices: List[int], batch_size: int
) -> Tuple[Dict[str, Dict[str, Tensor]], Tensor]:
    """Real features per extractor, read from the cache or computed and cached, and the class labels of the
    images they come from (unreadable files are left out of both)."""
    cache = default_cache_dir() / "eval-features"
    out: Dict[str, Dict[str, Tensor]] = {}
    labels: Dict[str, Tensor] = {}
    missing = {}
    for name, net in extractors.items():
        path = cache / f"{name}-{real_cache_key(dataset, indices, name)}.pt"
        if path.is_file():
            out[name] = torch.load(path, map_location="cpu", weights_only=True)
            labels[name] = out[name].pop("labels")
        else:
            missing[name] = (net, path)
    if missing:
        skipped: List[str] = []
        valid: List[int] = []
        batches = real_batches(dataset, indices, batch_size, skipped, valid)
        computed = extract({k: v[0] for k, v in missing.items()}, batches, len(indices), "real images")
        for name, (_, path) in missing.items():
            labels[name] = torch.tensor(valid, dtype=torch.long)
            stored = {**computed[name], "labels": labels[name]}
            atomic_write(path, lambda tmp, stored=stored: torch.save(stored, tmp))
            out[name] = computed[name]
        if skipped:
            CONSOLE.print(f"[yellow]{len(skipped)} unreadable real image(s) left out, e.g. {skipped[0]}")
    return out, next(iter(labels.values()))


# ---- geometry -----------------------------------------------------------------------------------------------
def view_pair_metrics(model: TriplaneGANModel, ws: Tensor, gen: torch.Generator) -> Dict[str, float]:
    """Multi-view consistency (both directions averaged) and opacity statistics of two views per latent."""
    n = ws.shape[0]
    yaw = torch.rand(n, generator=gen) * 2 * math.pi
    pitch = (torch.rand(n, generator=gen) - 0.5) * 0.8
    views = []
    for offset in (0.0, GEOMETRY_YAW_OFFSET):
        cameras = model.cameras(yaw_pitch_directions(yaw + offset, pitch))
        with torch.no_grad():
            out = model.generator_ema.render(ws, cameras, noise_mode="const")
        views.append(((out["image_raw"].clamp(0, 1), out["depth"], out["accumulation"]), cameras))
    (a, cam_a), (b, cam_b) = views
    forward = geometry.reprojection_errors(*a, cam_a, *b, cam_b)
    backward = geometry.reprojection_errors(*b, cam_b, *a, cam_a)
    result = {f"mvc_{k}": (forward[k] + backward[k]) / 2 for k in forward}
    result.update(geometry.opacity_statistics(torch.cat([a[2], b[2]])))
    return result


# ---- the command ---------------------------------------------------------------------------------------------
def evaluate(
    load_config: Path,
    *,
    metrics: Union[str, Sequence[str]] = "fid,kid,is",
    num_gen: int = 50000,
    num_nfs: int = 256,
    num_real: Optional[int] = None,
    data: Optional[Path] = None,
    checkpoint: Optional[Path] = None,
    inception_weights: Optional[Path] = None,
    geometry: bool = True,
    num_geometry: int = 32,
    shape_resolution: int = 64,
    shape_instances: int = 3,
    shape_threshold: Optional[float] = None,
    truncation: float = 1.0,
    batch_size: int = 32,
    seed: int = 0,
    kid_subset_size: int = 1000,
    per_class: bool = False,
    output: Optional[Path] = None,
    device: str = "auto",
) -> Dict[str, object]:
    """Evaluate the run of ``load_config`` (its ``checkpoint``, default the latest) as ``triplane-gan eval`` does
    (protocol in the module docstring and docs/evaluation.md); returns what it writes to ``output`` (default:
    ``eval-step-<step>.json`` next to ``config.yml``).

    ``metrics``: names from ``EVAL_METRICS``, comma-separated or a sequence ("none" or empty: geometry only).
    ``geometry`` adds the multi-view, opacity and (for data with known shapes) shape metrics.  Bad options raise
    ``UserError``.
    """
    metrics = parse_metrics(metrics if isinstance(metrics, str) else ",".join(metrics) or "none")
    counts = dict(
        num_gen=num_gen, num_nfs=num_nfs, batch_size=batch_size, num_geometry=num_geometry,
        shape_resolution=shape_resolution, shape_instances=shape_instances, kid_subset_size=kid_subset_size,
    )
    for name, count in counts.items():
        if count < (2 if name in ("num_gen", "kid_subset_size") else 1):
            raise UserError(f"--{name.replace('_', '-')} must be positive (at least 2 for num-gen and kid-subset-size)")
    if num_real is not None and num_real < 2:
        raise UserError("--num-real must be at least 2")
    check_truncation(truncation)
    device = resolve_device(device)
    extractors: Dict[str, torch.nn.Module] = {}
    if any(m in INCEPTION_METRICS for m in metrics):
        extractors["inception"] = InceptionFeatures(fidelity.inception_weights(inception_weights), device)
    if any(m in EFFNET_METRICS for m in metrics):
        extractors["effnet"] = EffNetFeatures(device)
    model, ckpt = load_model(load_config, checkpoint, device)
    number = ckpt.stem[len("step-") :] if ckpt.stem.startswith("step-") else ""
    step = int(number) if number.isdigit() else 0
    parser_config = read_run_config(load_config).pipeline.datamanager.dataparser
    dataset = real_dataset(parser_config, data, model.resolution)
    result: Dict[str, object] = {
        "checkpoint": str(ckpt),
        "step": step,
        "data": str(parser_config.data),
        "resolution": model.resolution,
        "truncation": truncation,
        "seed": seed,
        "feature_networks": {name: net.network for name, net in extractors.items()},
        "real_features_sha256": {},
        "metrics": {},
    }
    values: Dict[str, float] = {}
    if extractors:
        indices = real_subset(dataset, num_real, seed)
        real, real_labels = real_features(extractors, dataset, indices, batch_size)
        result["real_features_sha256"] = {name: features_sha256(feats) for name, feats in real.items()}
        batches = generated_batches(model, num_gen, batch_size, seed, truncation)
        fake = extract(extractors, batches, num_gen, "generated images")
        values.update(compute_metrics(metrics, fake, real, kid_subset_size, seed))
        if per_class:
            fake_labels = torch.arange(num_gen) % model.num_classes  # as generated_batches draws them
            names = dataset.class_names or [str(c) for c in range(model.num_classes)]
            values.update(per_class_metrics(metrics, fake, fake_labels, real, real_labels, names, kid_subset_size, seed))
        num_real = len(real_labels)
        result.update(num_gen=num_gen, num_real=num_real, unreadable_real=len(indices) - num_real)
    if "nfs" in metrics:
        values[flatness.NFS_NAME] = flatness.generator_non_flatness(
            model.generator_ema, model.pose_sampler, dataset.labels, num_nfs, batch_size, seed,
            truncation,
        )
        result.update(num_nfs=num_nfs, nfs_resolution=model.neural_resolution)
    if geometry:
        gen = torch.Generator().manual_seed(seed)
        labels = torch.arange(num_geometry) % model.num_classes
        z = torch.randn(num_geometry, model.generator.backbone.z_dim, generator=gen)
        with torch.no_grad():
            ws = model.generator_ema.mapping(z.to(model.device), labels.to(model.device), truncation)
        rows = [view_pair_metrics(model, ws[i : i + batch_size], gen) for i in range(0, len(ws), batch_size)]
        weights = [min(batch_size, len(ws) - i) for i in range(0, len(ws), batch_size)]
        for key in rows[0]:
            values[key] = sum(r[key] * n for r, n in zip(rows, weights)) / sum(weights)
        shapes = alignment.known_shapes(dataset.image_filenames, dataset.labels.tolist(), shape_instances)
        if shapes:
            details: Dict[str, object] = {}
            values.update(
                alignment.aligned_geometry_scores(
                    model.generator_ema,
                    shapes,
                    ws=ws,
                    labels=labels,
                    resolution=shape_resolution,
                    threshold=shape_threshold,
                    class_names=dataset.class_names,
                    settings=alignment.AlignmentSettings(seed=seed),
                    seed=seed,
                    details=details,
                )
            )
            result.update({f"shape_{key}": value for key, value in details.items()})
        result["num_geometry"] = num_geometry
    result["metrics"] = values
    run_dir = Path(load_config).parent
    output = output or run_dir / f"eval-step-{step:09d}.json"
    atomic_write(Path(output), lambda tmp: tmp.write_text(json.dumps(result, indent=1)))
    _log(run_dir, values, step)
    for key, value in values.items():
        CONSOLE.print(f"{key:>28}: {value:.6g}")
    CONSOLE.print(f"results: {output}")
    return result


def _log(run_dir: Path, values: Dict[str, float], step: int) -> None:
    """Append the values to the run's tensorboard log as ``Eval/<metric>``."""
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(log_dir=str(run_dir))
    for key, value in values.items():
        if math.isfinite(value):
            writer.add_scalar(f"Eval/{key}", value, step)
    writer.close()
