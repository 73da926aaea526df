"""Tests of the embedded analytic-shapes data set, its renderer and the camera helpers."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import torch
from PIL import Image

from triplane_gan_ns.data import embedded
from triplane_gan_ns.data.embedded import (
    EmbeddedDatasetSpec,
    default_cache_dir,
    ensure_embedded_dataset,
    generate_embedded_dataset,
    load_shape,
    render_shape,
)
from triplane_gan_ns.data.shapes import CLASS_NAMES, MAX_RADIUS, Shape, random_shape
from triplane_gan_ns.cameras import look_at, uniform_sphere_directions

REPO_ROOT = Path(__file__).resolve().parents[1]
SMALL = EmbeddedDatasetSpec(objects_per_class=2, views_per_object=3, resolution=32)


@pytest.fixture(autouse=True, scope="module")
def _single_thread() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_embedded_dataset(tmp_path_factory.mktemp("emb") / "data", SMALL, progress=False)


def _object_dirs(root: Path) -> list[Path]:
    return sorted(p for c in CLASS_NAMES for p in (root / c).iterdir())


def _read_pose(path: Path) -> np.ndarray:
    return np.loadtxt(path).reshape(4, 4)


def test_layout_and_counts(small_dataset: Path) -> None:
    meta = json.loads((small_dataset / "dataset.json").read_text())
    assert meta["class_names"] == list(CLASS_NAMES)
    assert meta["spec"] == SMALL.to_dict()
    assert meta["num_objects"] == len(CLASS_NAMES) * SMALL.objects_per_class
    assert meta["num_images"] == meta["num_objects"] * SMALL.views_per_object
    assert sorted(p.name for p in small_dataset.iterdir() if p.is_dir()) == sorted(CLASS_NAMES)
    for class_name in CLASS_NAMES:
        ids = sorted(p.name for p in (small_dataset / class_name).iterdir())
        assert ids == [f"{class_name}_{i:04d}" for i in range(SMALL.objects_per_class)]
        for object_id in ids:
            obj = small_dataset / class_name / object_id
            pngs = sorted(p.name for p in (obj / "rgb").iterdir())
            poses = sorted(p.name for p in (obj / "pose").iterdir())
            assert pngs == [f"{v:06d}.png" for v in range(SMALL.views_per_object)]
            assert poses == [f"{v:06d}.txt" for v in range(SMALL.views_per_object)]
            with Image.open(obj / "rgb" / pngs[0]) as im:
                assert im.mode == "RGB" and im.size == (SMALL.resolution, SMALL.resolution)
            assert load_shape(obj).kind == class_name
    assert {o["path"] for o in meta["objects"]} == {
        str(p.relative_to(small_dataset)) for p in _object_dirs(small_dataset)
    }
    assert not list(small_dataset.parent.glob("*.tmp-*"))


def test_intrinsics_file(small_dataset: Path) -> None:
    lines = (_object_dirs(small_dataset)[0] / "intrinsics.txt").read_text().splitlines()
    f, cx, cy, zero = map(float, lines[0].split())
    assert f == pytest.approx(0.5 * SMALL.resolution / math.tan(math.radians(SMALL.fov_degrees) / 2), rel=1e-5)
    assert (cx, cy, zero) == (SMALL.resolution / 2, SMALL.resolution / 2, 0.0)
    assert list(map(float, lines[1].split())) == [0.0, 0.0, 0.0]
    assert float(lines[2]) == 1.0
    assert list(map(int, lines[3].split())) == [SMALL.resolution, SMALL.resolution]


def test_generation_is_deterministic(small_dataset: Path, tmp_path: Path) -> None:
    other = generate_embedded_dataset(tmp_path / "again", SMALL, progress=False)
    files = sorted(p.relative_to(small_dataset) for p in small_dataset.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(other) for p in other.rglob("*") if p.is_file())
    for rel in files:
        assert (small_dataset / rel).read_bytes() == (other / rel).read_bytes(), rel


def test_different_seed_differs(small_dataset: Path, tmp_path: Path) -> None:
    spec = EmbeddedDatasetSpec(objects_per_class=1, views_per_object=1, resolution=16, seed=1)
    other = generate_embedded_dataset(tmp_path / "seed1", spec, progress=False)
    a = load_shape(small_dataset / "sphere" / "sphere_0000")
    b = load_shape(other / "sphere" / "sphere_0000")
    assert a != b


def test_pose_files_are_rigid_and_look_at_origin(small_dataset: Path) -> None:
    for obj in _object_dirs(small_dataset):
        for pose_file in sorted((obj / "pose").iterdir()):
            m = _read_pose(pose_file)
            np.testing.assert_allclose(m[3], [0, 0, 0, 1])
            rot, centre = m[:3, :3], m[:3, 3]
            np.testing.assert_allclose(rot.T @ rot, np.eye(3), atol=1e-5)
            assert np.linalg.det(rot) == pytest.approx(1.0, abs=1e-5)
            assert np.linalg.norm(centre) == pytest.approx(SMALL.camera_radius, rel=1e-5)
            np.testing.assert_allclose(-rot[:, 2], -centre / np.linalg.norm(centre), atol=1e-5)


def test_stored_pose_reproduces_stored_image(small_dataset: Path) -> None:
    obj = small_dataset / "torus" / "torus_0001"
    shape = load_shape(obj)
    for view in range(SMALL.views_per_object):
        pose = torch.from_numpy(_read_pose(obj / "pose" / f"{view:06d}.txt")).float()[:3]
        rgb, _, _ = render_shape(shape, pose, SMALL.resolution, SMALL.fov_degrees)
        stored = np.asarray(Image.open(obj / "rgb" / f"{view:06d}.png"), dtype=np.float32) / 255.0
        diff = np.abs(rgb.numpy() - stored)
        assert diff.mean() < 1.0 / 255.0
        assert (diff > 2.0 / 255.0).mean() < 0.01


def test_objects_fully_in_frame(small_dataset: Path) -> None:
    for png in small_dataset.rglob("*.png"):
        img = np.asarray(Image.open(png))
        border = np.concatenate([img[0], img[-1], img[:, 0], img[:, -1]])
        assert (border == 255).all(), png
        assert (img < 250).any(axis=-1).mean() > 0.05, png


def test_class_colours_differ(small_dataset: Path) -> None:
    means = {}
    for class_name in CLASS_NAMES:
        pixels = []
        for png in (small_dataset / class_name).rglob("*.png"):
            img = np.asarray(Image.open(png), dtype=np.float64) / 255.0
            pixels.append(img[(img < 0.98).any(axis=-1)])
        means[class_name] = np.concatenate(pixels).mean(axis=0)
    r, g, b = means["sphere"]
    assert r > 1.5 * g and r > 1.5 * b
    r, g, b = means["cube"]
    assert g > 1.5 * r and g > 1.5 * b
    r, g, b = means["torus"]
    assert b > 1.5 * r and b > 1.5 * g
    r, g, b = means["cylinder"]
    assert r > 1.5 * b and g > 1.5 * b and abs(r - g) < 0.5 * min(r, g)
    colours = [load_shape(small_dataset / c / f"{c}_0000").color for c in CLASS_NAMES]
    for i in range(len(colours)):
        for j in range(i + 1, len(colours)):
            assert np.abs(np.subtract(colours[i], colours[j])).max() > 0.2


def test_sphere_render_matches_analytic_projection() -> None:
    radius, distance, res, fov = 0.6, 2.5, 64, 40.0
    shape = Shape("sphere", radius)
    eye = distance * torch.nn.functional.normalize(torch.tensor([0.3, -0.5, 0.4]), dim=0)
    rgb, alpha, depth = render_shape(shape, look_at(eye), res, fov)
    assert rgb.shape == (res, res, 3) and alpha.shape == (res, res) and depth.shape == (res, res)
    focal = 0.5 * res / math.tan(math.radians(fov) / 2)
    expected_area = math.pi * (focal * math.tan(math.asin(radius / distance))) ** 2
    assert float(alpha.sum()) == pytest.approx(expected_area, rel=0.02)
    assert ((alpha > 0) & (alpha < 1)).any()
    assert float(depth[res // 2, res // 2]) == pytest.approx(distance - radius, abs=2e-3)
    assert torch.isinf(depth[0, 0]) and float(alpha[0, 0]) == 0.0
    torch.testing.assert_close(rgb[0, 0], torch.ones(3))
    assert (depth[alpha == 1] >= distance - radius - 1e-3).all()
    assert (depth[alpha == 1] <= distance).all()


def test_image_orientation_follows_opengl_convention() -> None:
    shape = Shape("sphere", 0.3)
    eye = torch.tensor([2.5, 0.0, 0.0])
    _, alpha_down, _ = render_shape(shape, look_at(eye, target=(0.0, 0.0, -0.6)), 32, 40.0)
    rows = torch.nonzero(alpha_down > 0.5)[:, 0].float()
    assert rows.mean() < 16 - 4
    _, alpha_right, _ = render_shape(shape, look_at(eye, target=(0.0, 0.6, 0.0)), 32, 40.0)
    cols = torch.nonzero(alpha_right > 0.5)[:, 1].float()
    assert cols.mean() < 16 - 4


def test_torus_has_hole_seen_from_pole() -> None:
    torus = Shape("torus", 0.5, 0.3)
    res, fov, distance = 64, 40.0, 2.5
    focal = 0.5 * res / math.tan(math.radians(fov) / 2)
    for z in (distance, -distance):
        _, alpha, depth = render_shape(torus, look_at(torch.tensor([0.0, 0.0, z])), res, fov)
        centre = res // 2
        assert float(alpha[centre, centre]) == 0.0 and torch.isinf(depth[centre, centre])
        ring = int(round(focal * 0.5 / (distance - 0.15)))
        assert float(alpha[centre, centre + ring]) == 1.0
        assert float(depth[centre, centre + ring]) == pytest.approx(
            math.hypot(distance, 0.5) - 0.15, abs=0.02
        )
    _, alpha_side, _ = render_shape(torus, look_at(torch.tensor([distance, 0.0, 0.0])), res, fov)
    assert float(alpha_side[res // 2, res // 2]) == 1.0


def test_sdf_sign_and_values() -> None:
    origin = torch.zeros(3)
    far = torch.tensor([0.95, 0.95, 0.95])
    for kind in ("sphere", "cube", "cylinder"):
        shape = Shape(kind, 0.4, 0.8)
        assert bool(shape.occupancy(origin))
        assert not bool(shape.occupancy(far))
    torus = Shape("torus", 0.45, 0.3)
    assert not bool(torus.occupancy(origin))
    assert bool(torus.occupancy(torch.tensor([0.45, 0.0, 0.0])))
    x = torch.tensor([[0.9, 0.0, 0.0], [0.0, 0.0, 0.9]])
    torch.testing.assert_close(Shape("sphere", 0.5).sdf(x), torch.tensor([0.4, 0.4]))
    torch.testing.assert_close(Shape("cube", 0.4, 1.25).sdf(x), torch.tensor([0.5, 0.4]))
    torch.testing.assert_close(Shape("cylinder", 0.4, 0.5).sdf(x), torch.tensor([0.5, 0.7]))
    torch.testing.assert_close(Shape("torus", 0.5, 0.2).sdf(x), torch.tensor([0.3, math.hypot(0.5, 0.9) - 0.1]))
    assert Shape("sphere", 0.5).sdf(torch.zeros(2, 5, 3)).shape == (2, 5)


@pytest.mark.parametrize("class_index", range(len(CLASS_NAMES)))
def test_sample_surface_lies_on_surface(class_index: int) -> None:
    generator = torch.Generator().manual_seed(class_index)
    shape = random_shape(class_index, generator)
    points = shape.sample_surface(2000, generator)
    assert points.shape == (2000, 3)
    assert shape.sdf(points).abs().max() < 1e-3
    assert points.norm(dim=-1).max() <= shape.bounding_radius + 1e-4
    s, a = shape.size, shape.aspect
    half_extent = {
        "sphere": (s, s, s),
        "cube": (s, s, s * a),
        "torus": (s * (1 + a), s * (1 + a), s * a),
        "cylinder": (s, s, s * a),
    }[shape.kind]
    torch.testing.assert_close(points.abs().max(0).values, torch.tensor(half_extent), atol=0.02, rtol=0)
    assert points.mean(0).abs().max() < 0.05


def test_random_shapes_fit_and_roundtrip() -> None:
    generator = torch.Generator().manual_seed(0)
    for class_index, kind in enumerate(CLASS_NAMES):
        for _ in range(50):
            shape = random_shape(class_index, generator)
            assert shape.kind == kind and shape.class_index == class_index
            assert shape.bounding_radius <= MAX_RADIUS
            assert all(0.0 <= c <= 1.0 for c in shape.color)
            assert Shape.from_dict(json.loads(json.dumps(shape.to_dict()))) == shape
        probe = shape.sample_surface(500, generator).norm(dim=-1).max()
        assert float(probe) == pytest.approx(shape.bounding_radius, abs=0.03)


def test_ensure_does_not_regenerate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = EmbeddedDatasetSpec(objects_per_class=1, views_per_object=2, resolution=16)
    root = ensure_embedded_dataset(spec, cache_dir=tmp_path, progress=False)
    assert root == tmp_path / f"embedded-shapes-{spec.cache_key()}"
    stamps = {p: p.stat().st_mtime_ns for p in root.rglob("*")}

    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("regenerated an existing data set")

    monkeypatch.setattr(embedded, "_write_dataset", fail)
    assert ensure_embedded_dataset(spec, cache_dir=tmp_path, progress=False) == root
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*")} == stamps


def test_mismatched_destination_is_replaced(tmp_path: Path) -> None:
    dest = tmp_path / "data"
    generate_embedded_dataset(dest, EmbeddedDatasetSpec(objects_per_class=1, views_per_object=1, resolution=16), False)
    spec = EmbeddedDatasetSpec(objects_per_class=1, views_per_object=2, resolution=16)
    generate_embedded_dataset(dest, spec, progress=False)
    assert json.loads((dest / "dataset.json").read_text())["spec"] == spec.to_dict()
    assert len(list((dest / "cube" / "cube_0000" / "rgb").iterdir())) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_concurrent_ensure(tmp_path: Path) -> None:
    code = (
        "import sys; from pathlib import Path;"
        "from triplane_gan_ns.data.embedded import EmbeddedDatasetSpec, ensure_embedded_dataset;"
        "spec = EmbeddedDatasetSpec(objects_per_class=2, views_per_object=4, resolution=16);"
        "print(ensure_embedded_dataset(spec, cache_dir=Path(sys.argv[1]), progress=False))"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]))
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, env=env, text=True)
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    spec = EmbeddedDatasetSpec(objects_per_class=2, views_per_object=4, resolution=16)
    expected = tmp_path / f"embedded-shapes-{spec.cache_key()}"
    assert outputs == [str(expected)] * 2
    assert sorted(p.name for p in tmp_path.iterdir()) == [expected.name]
    assert len(list(expected.rglob("*.png"))) == len(CLASS_NAMES) * 2 * 4


def test_cache_key_and_cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert EmbeddedDatasetSpec().cache_key() == EmbeddedDatasetSpec(fov_degrees=40).cache_key()
    assert EmbeddedDatasetSpec().cache_key() != EmbeddedDatasetSpec(seed=1).cache_key()
    assert EmbeddedDatasetSpec().cache_key() != EmbeddedDatasetSpec(version=2).cache_key()
    monkeypatch.setenv("TRIPLANE_GAN_NS_CACHE", str(tmp_path / "explicit"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "explicit"
    monkeypatch.delenv("TRIPLANE_GAN_NS_CACHE")
    assert default_cache_dir() == tmp_path / "xdg" / "triplane_gan_ns"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_cache_dir() == Path.home() / ".cache" / "triplane_gan_ns"


def _check_camera(c2w: torch.Tensor, eye: torch.Tensor, target: torch.Tensor) -> None:
    rot = c2w[:3, :3].double()
    torch.testing.assert_close(rot.T @ rot, torch.eye(3, dtype=torch.float64), atol=1e-5, rtol=0)
    assert float(torch.linalg.det(rot)) == pytest.approx(1.0, abs=1e-5)
    torch.testing.assert_close(c2w[:3, 3], eye)
    forward = torch.nn.functional.normalize(target - eye, dim=0)
    torch.testing.assert_close(-c2w[:3, 2], forward, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    "eye,target",
    [
        ((0.0, 0.0, 2.5), (0.0, 0.0, 0.0)),
        ((0.0, 0.0, -2.5), (0.0, 0.0, 0.0)),
        ((2.5, 0.0, 0.0), (0.0, 0.0, 0.0)),
        ((1.0, -2.0, 0.5), (0.0, 0.0, 0.0)),
        ((1.0, 2.0, 3.0), (0.2, -0.1, 0.3)),
        ((0.2, -0.1, 2.0), (0.2, -0.1, -1.0)),
    ],
)
def test_look_at(eye: tuple, target: tuple) -> None:
    eye_t, target_t = torch.tensor(eye), torch.tensor(target)
    c2w = look_at(eye_t, target=target)
    assert c2w.shape == (3, 4)
    _check_camera(c2w, eye_t, target_t)
    up = c2w[:3, 1]
    forward = torch.nn.functional.normalize(target_t - eye_t, dim=0)
    if abs(float(forward[2])) < 0.99:
        assert float(up[2]) > 0
        assert abs(float(c2w[2, 0])) < 1e-6


def test_look_at_batched_and_sphere_directions() -> None:
    generator = torch.Generator().manual_seed(3)
    dirs = uniform_sphere_directions(4000, generator)
    torch.testing.assert_close(dirs.norm(dim=-1), torch.ones(4000))
    assert dirs.mean(0).abs().max() < 0.05
    eyes = torch.cat([2.0 * dirs[:6], torch.tensor([[0.0, 0.0, 3.0], [0.0, 0.0, -3.0]])]).reshape(2, 4, 3)
    c2w = look_at(eyes)
    assert c2w.shape == (2, 4, 3, 4)
    for i in range(2):
        for j in range(4):
            _check_camera(c2w[i, j], eyes[i, j], torch.zeros(3))
