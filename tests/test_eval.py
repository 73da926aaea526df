"""``triplane-gan eval``: image metrics against independent computations, geometry metrics of a trained run,
real-feature caching, and one-line errors for missing weights and bad options."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from triplane_gan_ns.errors import UserError
from triplane_gan_ns.eval.evaluate import evaluate, parse_metrics
from triplane_gan_ns.eval.flatness import NUM_BINS, non_flatness_score, per_image_non_flatness
from triplane_gan_ns.eval.fidelity import INCEPTION_FILE, INCEPTION_URL, compute_metrics, inception_weights, per_class_metrics
from triplane_gan_ns.eval.metrics import FD_NAME, KID_NAME, frechet_distance


def _random_inception_weights(path):
    """torch-fidelity's Inception-v3 with random weights (the real structure; the pretrained file is not here)."""
    from torch_fidelity import feature_extractor_inceptionv3 as module

    torch.save({}, path)  # read, then ignored: the network keeps its random initialisation
    original = module.FeatureExtractorInceptionV3.load_state_dict
    module.FeatureExtractorInceptionV3.load_state_dict = lambda self, state: None
    try:
        torch.manual_seed(0)
        net = module.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(path))
    finally:
        module.FeatureExtractorInceptionV3.load_state_dict = original
    torch.save(net.state_dict(), path)
    return path


def test_metric_values_agree_with_independent_computations():
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(300, 16, generator=gen), torch.randn(300, 16, generator=gen) + 0.5
    fake = {"inception": {"pool": a, "logits": torch.zeros(300, 10)}, "effnet": {"pool": a}}
    real = {"inception": {"pool": b}, "effnet": {"pool": b}}
    values = compute_metrics(("fid", "kid", "is", "fd-effnetlite0", "kid-effnetlite0"), fake, real, kid_subset_size=100)
    # torch-fidelity's FID and our Fréchet distance are independent implementations of one formula
    assert values["FID"] == pytest.approx(frechet_distance(a, b), rel=1e-6)
    assert values[FD_NAME] == pytest.approx(16 * 0.25, rel=0.25)  # mean shift 0.5 in 16 dimensions
    assert values["IS"] == pytest.approx(1.0) and values["IS_std"] == pytest.approx(0.0, abs=1e-12)  # uniform logits
    assert values["KID"] > 0 and values[KID_NAME] > 0
    same = compute_metrics(("fid", "kid", "kid-effnetlite0"), fake, fake, kid_subset_size=100)
    assert abs(same["FID"]) < 1e-6
    assert abs(same["KID"]) < 0.2 * values["KID"] and abs(same[KID_NAME]) < 0.2 * values[KID_NAME]
    confident = torch.eye(10).repeat(1000, 1) * 50  # every class equally often, each image certain: IS = 10
    assert compute_metrics(("is",), {"inception": {"logits": confident}}, {})["IS"] == pytest.approx(10.0, rel=0.01)


def test_per_class_metrics_are_the_metrics_of_each_class_subset():
    gen = torch.Generator().manual_seed(1)
    fake_labels, real_labels = torch.arange(60) % 3, torch.tensor([0] * 30 + [1] * 25 + [2] * 1)
    a, b = torch.randn(60, 8, generator=gen), torch.randn(56, 8, generator=gen) + real_labels[:, None] * 0.3
    fake = {"inception": {"pool": a, "logits": torch.zeros(60, 10)}, "effnet": {"pool": a * 2}}
    real = {"inception": {"pool": b}, "effnet": {"pool": b * 2}}
    metrics = ("fid", "kid", "is", "fd-effnetlite0", "kid-effnetlite0")
    values = per_class_metrics(metrics, fake, fake_labels, real, real_labels, ["x", "y", "z"], kid_subset_size=10)
    # class z has a single real image: left out; IS is not a two-set metric: no per-class IS
    assert set(values) == {f"{k}/{c}" for k in ("FID", "KID", "KID_std", FD_NAME, KID_NAME, f"{KID_NAME}_std") for c in "xy"}
    for c, name in ((0, "x"), (1, "y")):
        f, r = fake_labels == c, real_labels == c
        alone = compute_metrics(
            ("fid", "kid", "fd-effnetlite0", "kid-effnetlite0"),
            {"inception": {"pool": a[f]}, "effnet": {"pool": a[f] * 2}},
            {"inception": {"pool": b[r]}, "effnet": {"pool": b[r] * 2}},
            kid_subset_size=10,
        )
        for key, value in alone.items():
            assert values[f"{key}/{name}"] == pytest.approx(value, rel=1e-9), (key, name)
    assert values["FID/y"] > values["FID/x"]  # class y's real features are shifted further


def test_missing_or_foreign_inception_weights_are_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(UserError) as err:
        inception_weights()
    message = str(err.value)
    assert "\n" not in message and INCEPTION_URL in message and str(tmp_path / "torch" / "hub" / "checkpoints" / INCEPTION_FILE) in message
    assert "fd-effnetlite0" in message
    foreign = tmp_path / "foreign.pth"
    torch.save({"conv.weight": torch.zeros(1)}, foreign)
    with pytest.raises(UserError, match="not torch-fidelity's Inception-v3"):
        inception_weights(foreign)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="cannot be read"):
        inception_weights(junk)


def test_metric_names_are_checked():
    assert parse_metrics("FID, kid,is") == ("fid", "kid", "is")
    assert parse_metrics("none") == ()
    with pytest.raises(UserError, match="unknown metric fdi; choose from fid"):
        parse_metrics("fdi,kid")
    assert parse_metrics("NFS,fd-effnetlite0") == ("nfs", "fd-effnetlite0")


# ---- non-flatness score ------------------------------------------------------------------------------------
def test_nfs_of_a_flat_plane_is_one():
    near, far = torch.tensor([1.5, 1.5, 0.5]), torch.tensor([3.5, 3.5, 4.0])
    depth = torch.stack([torch.full((32, 32), 2.2), torch.full((32, 32), 3.5), torch.full((32, 32), 0.5)])
    assert non_flatness_score(depth, near, far) == pytest.approx(1.0, abs=1e-6)  # the range's ends included


@pytest.mark.parametrize("k", [1, 2, 5, 16, 64])
def test_nfs_of_a_ramp_over_k_bins_is_k(k):
    """A linear depth ramp across exactly k of the 64 bins, each holding the same number of pixels: the
    normalised histogram is uniform over k bins, entropy log k, score k."""
    near, far = 1.5, 3.5
    width = (far - near) / NUM_BINS
    first = (NUM_BINS - k) // 2
    pixels = 12 * k
    ramp = near + (first + (torch.arange(pixels, dtype=torch.float64) + 0.5) / pixels * k) * width
    depth = ramp.view(1, 12, k).float()
    score = per_image_non_flatness(depth, torch.tensor([near]), torch.tensor([far]))
    assert float(score[0]) == pytest.approx(k, rel=1e-9)
    # mixed with a plane: the score is the mean over images
    plane = torch.full_like(depth, 2.0)
    pair = non_flatness_score(torch.cat([depth, plane]), torch.tensor([near] * 2), torch.tensor([far] * 2))
    assert pair == pytest.approx((k + 1) / 2, rel=1e-9)


def test_nfs_of_uneven_histograms_is_exp_entropy():
    depth = torch.tensor([1.0] * 3 + [2.0]).view(1, 2, 2)  # bins 0 and 32 of [1, 3]: p = (3/4, 1/4)
    expected = math.exp(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25)))
    assert float(per_image_non_flatness(depth, torch.tensor([1.0]), torch.tensor([3.0]))[0]) == pytest.approx(expected)


def _median_density(run):
    """The median density of one object of the run's EMA generator: a surface level that its few training
    steps (density still near its initial ~0.4 everywhere, never near export-mesh's 10) do cross."""
    from triplane_gan_ns.surface import density_grid
    from triplane_gan_ns.runs import load_model

    model, _ = load_model(run / "config.yml", None, "cpu")
    generator = model.generator_ema
    with torch.no_grad():
        ws = generator.mapping(torch.randn(1, generator.backbone.z_dim, generator=torch.Generator().manual_seed(0)), torch.zeros(1, dtype=torch.long))
        planes = generator.planes(ws)
        grid = density_grid(lambda p: generator.field.query(planes, p)[0][..., 0], 16, generator.config.scene_bound)
    return float(np.median(grid))


def test_eval_of_a_trained_run_writes_every_metric(trained_tiny_run, tmp_path, monkeypatch):
    weights = _random_inception_weights(tmp_path / INCEPTION_FILE)
    options = dict(
        metrics="fid,kid,is,fd-effnetlite0,kid-effnetlite0",
        num_gen=12,
        num_real=12,
        inception_weights=weights,
        num_geometry=4,
        shape_resolution=24,
        shape_instances=1,
        shape_threshold=_median_density(trained_tiny_run),
        batch_size=6,
        kid_subset_size=6,
        output=tmp_path / "eval.json",
        device="cpu",
    )
    result = evaluate(trained_tiny_run / "config.yml", **options)
    written = json.loads((tmp_path / "eval.json").read_text())
    assert written == json.loads(json.dumps(result))
    values = written["metrics"]
    expected = {"FID", "KID", "KID_std", "IS", "IS_std", FD_NAME, KID_NAME, f"{KID_NAME}_std"}
    expected |= {"mvc_colour_l1", "mvc_depth_rel", "mvc_coverage", "mean_opacity", "semi_transparent_fraction"}
    # the embedded data has true shapes: aligned scores per class and their means
    classes = ("cube", "cylinder", "sphere", "torus")
    aligned = {"shape_chamfer", "shape_fscore", "shape_iou", "shape_class_correct", "shape_num_classes", "shape_empty_fraction"}
    aligned |= {f"shape_{key}/{c}" for key in ("chamfer", "fscore", "iou", "class_correct_fraction") for c in classes}
    expected |= aligned
    assert expected <= set(values), expected - set(values)
    assert written["step"] == 3 and written["num_gen"] == 12 and written["num_real"] == 12
    assert written["seed"] == 0 and written["resolution"] == 32 and written["unreadable_real"] == 0
    assert set(written["feature_networks"]) == {"inception", "effnet"}
    assert "Inception-v3" in written["feature_networks"]["inception"] and str(weights) in written["feature_networks"]["inception"]
    assert "EfficientNet-Lite0" in written["feature_networks"]["effnet"]
    hashes = written["real_features_sha256"]
    assert set(hashes) == {"inception", "effnet"} and all(len(h) == 64 and int(h, 16) >= 0 for h in hashes.values())
    assert values["FID"] >= 0 and values[FD_NAME] >= 0 and values["IS"] >= 1.0
    assert values["shape_num_classes"] == 4 and values["shape_class_correct"] in (0, 1, 2, 3, 4)
    assert values["shape_empty_fraction"] < 1  # objects with a surface were aligned and scored
    unit = ["mvc_coverage", "mean_opacity", "semi_transparent_fraction", "shape_empty_fraction", "shape_fscore", "shape_iou"]
    unit += [f"shape_{key}/{c}" for key in ("fscore", "iou", "class_correct_fraction") for c in classes]
    for key in unit:
        assert 0.0 <= values[key] <= 1.0, key
    assert values["shape_chamfer"] > 0 and np.isfinite(values["shape_chamfer"])
    matrix = written["shape_fscore_matrix"]  # generated class -> true class -> mean F-score
    assert matrix and all(set(row) == set(classes) and all(0 <= v <= 1 for v in row.values()) for row in matrix.values())
    # real features are cached: a second evaluation, through the command line this time, reads them and
    # reproduces every value
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)  # the entry point installs its own
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in {**options, "output": tmp_path / "cli.json"}.items()]
    monkeypatch.setattr(sys, "argv", ["triplane-gan", "eval", "--load-config", str(trained_tiny_run / "config.yml"), *flags])
    from triplane_gan_ns.cli import main

    main.entrypoint()
    repeated = json.loads((tmp_path / "cli.json").read_text())
    assert repeated["real_features_sha256"] == hashes and repeated["num_real"] == 12
    again = repeated["metrics"]
    for key, value in values.items():
        assert again[key] == pytest.approx(value, rel=1e-6, nan_ok=True), key
    # the values are logged to the run's tensorboard
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(trained_tiny_run))
    acc.Reload()
    assert f"Eval/{FD_NAME}" in acc.Tags()["scalars"]
    assert np.isclose(acc.Scalars("Eval/FID")[-1].value, values["FID"], rtol=1e-4)
    assert np.isclose(acc.Scalars("Eval/shape_fscore")[-1].value, values["shape_fscore"], rtol=1e-4)
    assert "Eval/shape_fscore/torus" in acc.Tags()["scalars"]


def test_eval_nfs_on_a_trained_run_writes_a_finite_score(trained_tiny_run, tmp_path):
    """``triplane-gan eval --metrics nfs``: no real images or feature networks needed; the JSON holds NFS and
    how it was made."""
    output = tmp_path / "nfs.json"
    result = subprocess.run(
        [
            str(Path(sys.executable).with_name("triplane-gan")), "eval", "--load-config", str(trained_tiny_run / "config.yml"),
            "--metrics", "nfs", "--num-nfs", "6", "--batch-size", "4", "--no-geometry", "--seed", "3",
            "--output", str(output), "--device", "cpu",
        ],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    written = json.loads(output.read_text())
    assert math.isfinite(written["metrics"]["NFS"]) and 1.0 <= written["metrics"]["NFS"] <= NUM_BINS
    assert written["num_nfs"] == 6 and written["nfs_resolution"] == 32 and written["seed"] == 3
    assert "NFS" in result.stdout


def test_eval_per_class_writes_each_class(trained_tiny_run, tmp_path):
    """``--per-class``: FD- and KID-EffNetLite0 of each class's generated images against its real images."""
    written = evaluate(
        trained_tiny_run / "config.yml",
        metrics="fd-effnetlite0,kid-effnetlite0",
        num_gen=8,
        num_real=12,
        geometry=False,
        per_class=True,
        batch_size=8,
        kid_subset_size=4,
        output=tmp_path / "eval.json",
        device="cpu",
    )
    values = written["metrics"]
    real_classes = {c for c in ("cube", "cylinder", "sphere", "torus") if f"{FD_NAME}/{c}" in values}
    assert real_classes  # classes with at least two real images among the 12
    for c in real_classes:
        assert values[f"{FD_NAME}/{c}"] >= 0 and np.isfinite(values[f"{KID_NAME}/{c}"])
    assert written["feature_networks"].keys() == {"effnet"} and written["real_features_sha256"].keys() == {"effnet"}
