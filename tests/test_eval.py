"""``triplane-gan eval``: image metrics against independent computations, geometry metrics of a trained run,
real-feature caching, and one-line errors for missing weights and bad options."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from run_fixture import trained_tiny_run  # noqa: F401  (pytest fixture)

from triplane_gan_ns.errors import UserError
from triplane_gan_ns.eval.command import Evaluate, evaluate, parse_metrics
from triplane_gan_ns.eval.fidelity import INCEPTION_FILE, INCEPTION_URL, compute_metrics, inception_weights
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


def test_eval_of_a_trained_run_writes_every_metric(trained_tiny_run, tmp_path):
    weights = _random_inception_weights(tmp_path / INCEPTION_FILE)
    config = Evaluate(
        load_config=trained_tiny_run / "config.yml",
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
    result = evaluate(config)
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
    # real features are cached: a second evaluation reads them and reproduces every value
    again = evaluate(config)["metrics"]
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
