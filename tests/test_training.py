"""The tiny preset trains through ``ns-train`` on the embedded data, checkpoints load back, bad input is one line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

NS_TRAIN = str(Path(sys.executable).with_name("ns-train"))


def _ns_train(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [NS_TRAIN, "triplane-gan-tiny", *args], capture_output=True, text=True, timeout=timeout, env=dict(os.environ)
    )


@pytest.fixture
def tiny_run(trained_tiny_run):
    """The session's 4-step ns-train run (checkpoints at steps 2 and 3)."""
    return trained_tiny_run


def _load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


def test_training_changes_generator_and_discriminator(tiny_run):
    ckpts = sorted((tiny_run / "nerfstudio_models").glob("step-*.ckpt"))
    assert [c.name for c in ckpts] == ["step-000000002.ckpt", "step-000000003.ckpt"]
    a, b = (_load(c)["pipeline"] for c in ckpts)
    for prefix in ("_model.generator.backbone.", "_model.generator.field.", "_model.discriminator."):
        keys = [k for k in a if k.startswith(prefix) and a[k].is_floating_point() and "w_avg" not in k]
        assert keys, prefix
        changed = [k for k in keys if not torch.equal(a[k], b[k])]
        assert len(changed) >= 0.5 * len(keys), (prefix, len(changed), len(keys))
    assert set(_load(ckpts[-1])["optimizers"]) == {"generator", "discriminator"}


def test_sample_grid_png_has_classes_by_views(tiny_run):
    grid = np.asarray(Image.open(tiny_run / "samples" / "samples-latest.png"))
    assert grid.shape == (4 * 48, 6 * 48, 3)  # 4 embedded classes x 6 azimuths at --preview-resolution 48
    assert grid.std() > 1.0  # not a blank image
    orbit = Image.open(tiny_run / "samples" / "orbit-latest.gif")
    assert orbit.n_frames == 24 and orbit.size == (48, 48)


def test_previews_render_the_same_field_at_any_size(tiny_model):
    """A generator without super-resolution renders its previews at any size: the default is the neural
    resolution, and a 64² grid averaged down to 32² is the 32² grid (a framing error of one 64² pixel would
    differ 70x more: 5e-3 against 7e-5 on this model)."""
    small = tiny_model.sample_grid(num_views=3)
    assert small.shape == (3, 4 * 32, 3 * 32)
    assert torch.equal(small, tiny_model.sample_grid(num_views=3, resolution=32))
    large = tiny_model.sample_grid(num_views=3, resolution=64)
    assert large.shape == (3, 4 * 64, 3 * 64)
    pooled = torch.nn.functional.avg_pool2d(large[None], 2)[0]
    assert (pooled - small).abs().mean() < 5e-4
    assert tiny_model.orbit(0, 0, num_frames=2, resolution=40).shape == (2, 3, 40, 40)


def test_preview_size_is_checked_before_training(tmp_path):
    import copy

    from triplane_gan_ns.errors import UserError
    from triplane_gan_ns.method_configs.triplane_gan import triplane_gan_tiny

    config = copy.deepcopy(triplane_gan_tiny.config)
    config.output_dir = tmp_path
    assert config.preview_resolution == 128
    config.check_settings()
    for size in (0, 257):
        config.preview_resolution = size
        with pytest.raises(UserError, match=f"--preview-resolution {size}: use 1 to 256, or None"):
            config.check_settings()
    config.preview_resolution = 256
    config.check_settings()
    config.preview_resolution = None
    config.check_settings()


def test_the_longer_preset_is_the_recorded_longer_recipe():
    """``triplane-gan-tiny-long`` is exactly the run of docs/benchmarks.md's longer recipe: the tiny preset with
    that run's command-line flags, parsed as ns-train parses them (only the method's name differs)."""
    import copy

    import tyro

    from triplane_gan_ns.method_configs.triplane_gan import triplane_gan_tiny, triplane_gan_tiny_long
    from triplane_gan_ns.training.trainer import GanTrainerConfig

    flags = "--max-num-iterations 2400 --steps-per-save 300 --geometry-objects-per-class 2"
    flags += " --pipeline.model.generator.num-coarse-samples 8"
    recipe = tyro.cli(GanTrainerConfig, default=copy.deepcopy(triplane_gan_tiny.config), args=flags.split())
    longer = triplane_gan_tiny_long.config
    assert recipe != longer and longer.method_name == "triplane-gan-tiny-long"
    recipe.method_name = longer.method_name
    assert recipe == longer
    assert triplane_gan_tiny.config.pipeline.model.generator.num_coarse_samples == 4  # the demo's preset is unchanged
    assert triplane_gan_tiny.config.max_num_iterations == 1200


def test_a_super_resolving_generator_previews_its_output_images():
    """The tiny preset with 16² renderings super-resolved to 32²: a preview asked for at 128² (the preset's size)
    shows the generator's 32² output images, the same as the default."""
    import copy

    from nerfstudio.data.scene_box import SceneBox

    from triplane_gan_ns.method_configs.triplane_gan import triplane_gan_tiny

    cfg = copy.deepcopy(triplane_gan_tiny.config.pipeline.model)
    cfg.generator.neural_resolution = 16
    torch.manual_seed(0)
    model = cfg.setup(
        scene_box=SceneBox(aabb=torch.tensor([[-1.0] * 3, [1.0] * 3])),
        num_train_data=1,
        metadata={"class_names": ["a", "b"], "resolution": 32},
    ).eval()
    assert model.generator.superresolution is not None
    grid = model.sample_grid(num_views=2, resolution=128)
    assert grid.shape == (3, 2 * 32, 2 * 32)
    assert torch.equal(grid, model.sample_grid(num_views=2))
    assert model.orbit(0, 0, num_frames=2, resolution=128).shape == (2, 3, 32, 32)


def test_progress_table_shows_images_per_second(tiny_run):
    import re

    text = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", (tiny_run / "ns-train-stdout.txt").read_text())
    header = next(line for line in text.splitlines() if line.startswith("Step (% Done)"))
    assert "Train Images / Sec" in header and "Rays" not in header
    row = next(line for line in text.splitlines() if line.startswith("0 (0.00%)"))
    column = header.index("Train Images / Sec")
    images_per_sec = float(row[column:].split()[0])
    assert 0 < images_per_sec < 1000  # 4 real images per step, each step well under a second to a few seconds


def test_checkpoint_loads_back_through_nerfstudio(tiny_run):
    from nerfstudio.utils.eval_utils import eval_setup

    config, pipeline, ckpt_path, step = eval_setup(tiny_run / "config.yml", test_mode="inference")
    assert step == 3
    state = _load(ckpt_path)["pipeline"]
    for key, value in pipeline.state_dict().items():
        torch.testing.assert_close(value.cpu(), state[key], msg=key)
    assert pipeline.model.class_names == ["cube", "cylinder", "sphere", "torus"]
    cameras = pipeline.model.orbit_cameras(1)
    out = pipeline.model.get_outputs_for_camera(cameras[0:1])
    assert out["rgb"].shape == (32, 32, 3) and out["depth"].shape == (32, 32, 1)


def test_missing_data_folder_is_one_line(tmp_path):
    result = _ns_train("--data", str(tmp_path / "nope"), "--output-dir", str(tmp_path / "out"))
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "nope" in lines[0] and "does not exist" in lines[0]
    assert "Traceback" not in result.stderr


def test_folder_without_images_is_one_line(tmp_path):
    (tmp_path / "data" / "chairs" / "obj1" / "rgb").mkdir(parents=True)
    (tmp_path / "data" / "chairs" / "obj1" / "rgb" / "notes.txt").write_text("no pictures here")
    result = _ns_train("--data", str(tmp_path / "data"), "--output-dir", str(tmp_path / "out"))
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "no images found" in lines[0]
    assert "Traceback" not in result.stderr


def test_unknown_component_name_is_rejected_with_choices(tmp_path):
    result = _ns_train("stylegan3-alias-free", "--output-dir", str(tmp_path))
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    text = result.stdout + result.stderr
    assert "stylegan3-alias-free" in text and "stylegan2-triplane" in text


def test_generator_loads_from_the_run_folder_without_data(tiny_run):
    import json

    from triplane_gan_ns.runs import load_model

    index = json.loads((tiny_run / "class_index.json").read_text())
    assert [c["name"] for c in index["classes"]] == ["cube", "cylinder", "sphere", "torus"]
    assert index["resolution"] == 32
    model, ckpt = load_model(tiny_run / "config.yml")
    assert ckpt.name == "step-000000003.ckpt"
    state = _load(ckpt)["pipeline"]
    torch.testing.assert_close(
        model.generator_ema.backbone.w_avg, state["_model.generator_ema.backbone.w_avg"]
    )
    a = model.orbit(1, 5, num_frames=2)
    b = model.orbit(1, 5, num_frames=2)
    assert torch.equal(a, b) and a.shape == (2, 3, 32, 32)


def test_loading_errors_are_one_line(tmp_path, tiny_run):
    from triplane_gan_ns.errors import UserError
    from triplane_gan_ns.runs import load_model

    with pytest.raises(UserError, match="does not exist"):
        load_model(tmp_path / "config.yml")
    (tmp_path / "config.yml").write_text("{not: [valid")
    with pytest.raises(UserError, match="not a readable"):
        load_model(tmp_path / "config.yml")


def test_checkpoints_log_the_aligned_geometry_measure(tiny_trainer, tiny_run, monkeypatch):
    """On data with known shapes every checkpoint logs the pose-free geometry measure of the EMA generator: the
    same numbers as ``aligned_geometry_scores`` called directly, one line per save in geometry.jsonl, and the
    training RNG streams untouched (a resumed run must continue identically)."""
    import json

    from triplane_gan_ns.alignment import aligned_geometry_scores, known_shapes
    from triplane_gan_ns.training.trainer import rng_state

    trainer = tiny_trainer(geometry_objects_per_class=1, geometry_resolution=16)
    model = trainer.pipeline.gan_model
    # density far above the surface level everywhere in the box: every generated object is the box, a cube
    model.generator_ema.field.config.density_shift = 30.0
    before = rng_state()
    scores = trainer.log_geometry(7)
    assert all(torch.equal(before[k], v) for k, v in rng_state().items())
    dataset = trainer.pipeline.datamanager.train_dataset
    shapes = known_shapes(dataset.image_filenames, dataset.labels.tolist(), per_class=2)
    assert sorted(shapes) == [0, 1, 2, 3]
    reference = aligned_geometry_scores(
        model.generator_ema, shapes, num_per_class=1, resolution=16, class_names=model.class_names, seed=0
    )
    assert scores == reference
    assert scores["shape_empty_fraction"] == 0.0
    # the box is a cube: it matches the cube class better than the torus
    assert scores["shape_fscore/cube"] > scores["shape_fscore/torus"] + 0.2
    assert scores["shape_class_correct_fraction/cube"] == 1.0
    # the next checkpoint appends its line (the measure itself is replaced: its result is checked above)
    from triplane_gan_ns import alignment

    monkeypatch.setattr(alignment, "aligned_geometry_scores", lambda *a, **k: {**scores, "shape_fscore": 0.5})
    trainer.log_geometry(9)
    lines = [json.loads(line) for line in (trainer.base_dir / "geometry.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [7, 9]
    assert lines[0] == {"step": 7, **scores}
    assert lines[1] == {"step": 9, **scores, "shape_fscore": 0.5}
    # a run resumed from an earlier checkpoint measures again: the lines after it are replaced, not repeated
    trainer.log_geometry(8)
    assert [json.loads(line)["step"] for line in (trainer.base_dir / "geometry.jsonl").read_text().splitlines()] == [7, 8]
    # a run on the embedded data logged it at each of its two checkpoints
    logged = [json.loads(line)["step"] for line in (tiny_run / "geometry.jsonl").read_text().splitlines()]
    assert logged == [2, 3]
    assert "geometry at step 3: F-score@0.05" in (tiny_run / "ns-train-stdout.txt").read_text()
