"""Tests of the mesh fixture: pymeshlab's sample meshes rendered in the ShapeNet-renders layout."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path
from typing import Dict, List

import numpy as np
import pytest
import torch
import trimesh
from PIL import Image

from triplane_gan_ns.cameras import focal_from_fov
from triplane_gan_ns.data.meshes import (
    generate_mesh_dataset,
    load_normalized_mesh,
    mesh_occupancy,
    normalizing_transform,
    ray_backend,
    render_mesh,
    sample_meshes,
    winding_numbers,
)
from triplane_gan_ns.data.renders_dataparser import RendersDataParserConfig
from triplane_gan_ns.data.shapes import MAX_RADIUS
from triplane_gan_ns.errors import UserError
from triplane_gan_ns.cameras import look_at

VIEWS = 3
RES = 32
RADIUS = 2.5
FOV = 40.0


@pytest.fixture(scope="module")
def meshes() -> Dict[str, List[Path]]:
    return sample_meshes()


@pytest.fixture(scope="module")
def fixture_root(meshes: Dict[str, List[Path]], tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = tmp_path_factory.mktemp("meshes") / "data"
    return generate_mesh_dataset(
        meshes, dest, views_per_object=VIEWS, resolution=RES, camera_radius=RADIUS, fov_degrees=FOV, progress=False
    )


def _files(root: Path) -> Dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _pixel_rays(c2w: np.ndarray, resolution: int, fov: float, row: int, col: int) -> np.ndarray:
    """World directions of the 2x2 samples of pixel (row, col), from the pinhole model."""
    focal = 0.5 * resolution / math.tan(math.radians(fov) / 2.0)
    dirs = []
    for dv in (0.25, 0.75):
        for du in (0.25, 0.75):
            x = (col + du - resolution / 2.0) / focal
            y = -(row + dv - resolution / 2.0) / focal
            d = np.array([x, y, -1.0])
            dirs.append(c2w[:3, :3] @ (d / np.linalg.norm(d)))
    return np.stack(dirs)


def _first_hit_distance(triangles: np.ndarray, origin: np.ndarray, direction: np.ndarray) -> float:
    """Möller-Trumbore against every triangle (brute force), nearest positive distance or inf."""
    v0, v1, v2 = triangles[:, 0], triangles[:, 1], triangles[:, 2]
    e1, e2 = v1 - v0, v2 - v0
    p = np.cross(direction, e2)
    det = (e1 * p).sum(-1)
    ok = np.abs(det) > 1e-12
    inv = np.where(ok, 1.0 / np.where(ok, det, 1.0), 0.0)
    s = origin - v0
    u = (s * p).sum(-1) * inv
    q = np.cross(s, e1)
    v = (direction * q).sum(-1) * inv
    t = (e2 * q).sum(-1) * inv
    hit = ok & (u >= 0) & (v >= 0) & (u + v <= 1) & (t > 1e-9)
    return float(t[hit].min()) if hit.any() else math.inf


def test_sample_meshes_found(meshes: Dict[str, List[Path]]) -> None:
    assert sorted(meshes) == ["airplane", "bunny", "cow"]
    assert [p.name for p in meshes["cow"]] == ["cow.obj"]
    assert all(p.is_file() for paths in meshes.values() for p in paths)


def test_sample_meshes_missing_is_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="sample meshes"):
        sample_meshes(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="reinstall pymeshlab"):
        sample_meshes(tmp_path / "empty")


@pytest.mark.skipif(importlib.util.find_spec("embreex") is None, reason="embreex not installed")
def test_embree_backend_active() -> None:
    assert ray_backend(trimesh.creation.icosphere(subdivisions=1)) == "embree"


def test_dataparser_reads_fixture(fixture_root: Path, meshes: Dict[str, List[Path]]) -> None:
    outputs = RendersDataParserConfig(data=fixture_root).setup().get_dataparser_outputs()
    num_objects = sum(len(p) for p in meshes.values())
    assert len(outputs.image_filenames) == num_objects * VIEWS
    assert outputs.metadata["class_names"] == ["airplane", "bunny", "cow"]
    labels = outputs.metadata["labels"]
    assert torch.bincount(labels).tolist() == [len(meshes[c]) * VIEWS for c in ("airplane", "bunny", "cow")]
    assert outputs.cameras.fx[0, 0].item() == pytest.approx(focal_from_fov(RES, FOV), rel=1e-5)
    assert int(outputs.cameras.width[0]) == RES and int(outputs.cameras.height[0]) == RES
    first = np.loadtxt(outputs.image_filenames[0].parent.parent / "pose" / "000000.txt")
    np.testing.assert_allclose(outputs.cameras.camera_to_worlds[0].numpy(), first[:3], atol=1e-6)

    meta = json.loads((fixture_root / "dataset.json").read_text())
    assert meta["num_images"] == num_objects * VIEWS and meta["class_names"] == ["airplane", "bunny", "cow"]
    for obj in meta["objects"]:
        shape = json.loads((fixture_root / obj["path"] / "shape.json").read_text())
        assert shape["kind"] == "mesh" and Path(shape["source"]).is_file()
        assert np.asarray(shape["transform"]).shape == (4, 4)
        image = np.asarray(Image.open(fixture_root / obj["path"] / "rgb" / "000000.png"))
        assert image.shape == (RES, RES, 3)
        assert (image.min(axis=-1) < 200).mean() > 0.03, f"{obj['path']} view 0 is (nearly) empty"
        assert (image[0].min() == 255) and (image[:, 0].min() == 255), f"{obj['path']} touches the frame"


def test_poses_are_rigid_and_look_at_origin(fixture_root: Path) -> None:
    poses = sorted(fixture_root.glob("*/*/pose/*.txt"))
    assert len(poses) == 5 * VIEWS
    for path in poses:
        matrix = np.loadtxt(path).reshape(4, 4)
        rotation, t = matrix[:3, :3], matrix[:3, 3]
        np.testing.assert_allclose(matrix[3], [0.0, 0.0, 0.0, 1.0])
        np.testing.assert_allclose(rotation.T @ rotation, np.eye(3), atol=1e-5)
        assert np.linalg.det(rotation) == pytest.approx(1.0, abs=1e-5)
        assert np.linalg.norm(t) == pytest.approx(RADIUS, rel=1e-5)
        np.testing.assert_allclose(rotation[:, 2], t / np.linalg.norm(t), atol=1e-5)


def test_generation_is_deterministic_and_cached(
    fixture_root: Path, meshes: Dict[str, List[Path]], tmp_path: Path
) -> None:
    again = generate_mesh_dataset(
        meshes, tmp_path / "again", views_per_object=VIEWS, resolution=RES, camera_radius=RADIUS, progress=False
    )
    assert _files(again) == _files(fixture_root)
    stamp = (again / "dataset.json").stat().st_mtime_ns
    generate_mesh_dataset(
        meshes, again, views_per_object=VIEWS, resolution=RES, camera_radius=RADIUS, progress=False
    )
    assert (again / "dataset.json").stat().st_mtime_ns == stamp
    assert not list(tmp_path.glob("again.tmp-*"))


def test_normalisation(meshes: Dict[str, List[Path]]) -> None:
    for path in [p for paths in meshes.values() for p in paths]:
        mesh, transform = load_normalized_mesh(path)
        used = mesh.vertices[np.unique(mesh.faces)]
        assert np.linalg.norm(used, axis=1).max() == pytest.approx(MAX_RADIUS, rel=0.01), path.name
        np.testing.assert_allclose(0.5 * (used.min(0) + used.max(0)), 0.0, atol=1e-6)
        raw = trimesh.load(str(path), force="mesh")
        np.testing.assert_allclose(trimesh.transform_points(raw.vertices, transform), mesh.vertices, atol=1e-9)
        assert np.linalg.det(transform[:3, :3]) > 0


def test_up_axis_rotation(tmp_path: Path) -> None:
    box = trimesh.creation.box(extents=(0.4, 2.0, 1.0))
    box.apply_translation((3.0, -1.0, 0.5))
    box.export(tmp_path / "box.obj")
    y_up, _ = load_normalized_mesh(tmp_path / "box.obj", up_axis="y")
    extents = y_up.extents
    assert extents[2] == pytest.approx(extents.max()) and extents[1] == pytest.approx(extents[2] / 2.0)
    z_up, _ = load_normalized_mesh(tmp_path / "box.obj", up_axis="z")
    assert z_up.extents[1] == pytest.approx(z_up.extents.max())
    # +y of the source points up (+z) after rotation: the top face stays on top
    marker = np.array([[3.0, 0.0, 0.5]])
    _, transform = load_normalized_mesh(tmp_path / "box.obj", up_axis="y")
    assert trimesh.transform_points(marker, transform)[0, 2] > 0.5


def test_sphere_depth_and_silhouette() -> None:
    r, d, res = 0.5, 2.5, 33
    sphere = trimesh.creation.icosphere(subdivisions=4, radius=r)
    c2w = look_at(torch.tensor([d, 0.0, 0.0]))
    rgb, alpha, depth = render_mesh(sphere, c2w, res, FOV)
    centre = res // 2
    assert alpha[centre, centre].item() == 1.0
    assert depth[centre, centre].item() == pytest.approx(d - r, abs=2e-3)
    assert math.isinf(depth[0, 0].item()) and alpha[0, 0].item() == 0.0
    assert torch.all(rgb[0, 0] == 1.0)
    focal = focal_from_fov(res, FOV)
    disc = math.pi * (focal * r / math.sqrt(d * d - r * r)) ** 2
    assert alpha.sum().item() == pytest.approx(disc, rel=0.03)

    inverted = sphere.copy()
    inverted.invert()
    rgb_inv, alpha_inv, depth_inv = render_mesh(inverted, c2w, res, FOV)
    assert torch.equal(alpha_inv, alpha)
    torch.testing.assert_close(rgb_inv, rgb, atol=1e-6, rtol=0)
    torch.testing.assert_close(depth_inv[alpha > 0], depth[alpha > 0], atol=1e-5, rtol=0)
    lit = rgb[alpha == 1.0][:, 0]
    assert lit.max() > 0.7 and lit.min() < 0.5, "Lambertian shading varies across the sphere"


def test_depth_matches_independent_ray_cast(meshes: Dict[str, List[Path]]) -> None:
    mesh, _ = load_normalized_mesh(meshes["bunny"][0])
    c2w = look_at(torch.tensor([1.6, -1.2, 1.3]))
    rgb, alpha, depth = render_mesh(mesh, c2w, RES, FOV)
    row = col = RES // 2
    origin = c2w[:, 3].double().numpy()
    dists = [
        _first_hit_distance(mesh.triangles, origin, ray) for ray in _pixel_rays(c2w.double().numpy(), RES, FOV, row, col)
    ]
    assert all(math.isfinite(t) for t in dists) and alpha[row, col].item() == 1.0
    assert depth[row, col].item() == pytest.approx(float(np.mean(dists)), rel=1e-4)
    hits = alpha > 0
    assert torch.isfinite(depth[hits]).all() and torch.isinf(depth[~hits]).all()
    assert ((depth[hits] > RADIUS - MAX_RADIUS - 1e-4) & (depth[hits] < RADIUS + MAX_RADIUS)).all()


def test_vertex_and_face_colours() -> None:
    sphere = trimesh.creation.icosphere(subdivisions=3, radius=0.6)
    sphere.visual.vertex_colors = np.tile([255, 0, 0, 255], (len(sphere.vertices), 1))
    c2w = look_at(torch.tensor([0.0, -2.5, 1.0]))
    rgb, alpha, _ = render_mesh(sphere, c2w, RES, FOV, color=(0.2, 0.9, 0.2))
    inner = alpha == 1.0
    assert inner.sum() > 50
    assert (rgb[inner][:, 0] > 0.3).all() and (rgb[inner][:, 1:] < 1e-6).all()

    half_red = trimesh.creation.icosphere(subdivisions=3, radius=0.6)
    half_red.visual.face_colors = np.where(
        (half_red.triangles_center[:, 0] > 0)[:, None], [255, 0, 0, 255], [0, 0, 255, 255]
    ).astype(np.uint8)
    rgb, alpha, _ = render_mesh(half_red, c2w, RES, FOV)
    left, right = rgb[RES // 2, RES // 2 - 4], rgb[RES // 2, RES // 2 + 4]
    assert left[2] > 0.3 and left[0] < 1e-6, "camera at -y sees -x on the left"
    assert right[0] > 0.3 and right[2] < 1e-6

    plain = trimesh.creation.icosphere(subdivisions=3, radius=0.6)
    rgb, alpha, _ = render_mesh(plain, c2w, RES, FOV, color=(0.2, 0.9, 0.2))
    assert (rgb[alpha == 1.0][:, 1] > rgb[alpha == 1.0][:, 0]).all()


def test_texture_lookup() -> None:
    texture = np.zeros((16, 16, 3), dtype=np.uint8)
    texture[:8, :8] = (255, 0, 0)  # top left (v > 0.5, u < 0.5)
    texture[:8, 8:] = (0, 255, 0)
    texture[8:, :8] = (0, 0, 255)
    texture[8:, 8:] = (255, 255, 255)
    vertices = np.array([[-0.5, -0.5, 0.0], [0.5, -0.5, 0.0], [0.5, 0.5, 0.0], [-0.5, 0.5, 0.0]])
    uv = vertices[:, :2] + 0.5
    quad = trimesh.Trimesh(
        vertices,
        [[0, 1, 2], [0, 2, 3]],
        visual=trimesh.visual.TextureVisuals(uv=uv, image=Image.fromarray(texture)),
        process=False,
    )
    c2w = look_at(torch.tensor([0.0, 0.0, 2.5]))  # at the pole: image right = +x, image up = +y
    rgb, alpha, _ = render_mesh(quad, c2w, RES, FOV, background=(0.0, 0.0, 0.0))
    q1, q3 = RES // 2 - 4, RES // 2 + 4
    expected = {(q1, q1): 0, (q1, q3): 1, (q3, q1): 2}
    for (row, col), channel in expected.items():
        assert alpha[row, col] == 1.0
        assert rgb[row, col].argmax().item() == channel and rgb[row, col][channel] > 0.5
    assert rgb[q3, q3].min() > 0.5


def test_occupancy(tmp_path: Path) -> None:
    source = trimesh.creation.icosphere(subdivisions=3, radius=2.0)
    source.apply_translation((1.0, 2.0, 3.0))
    transform = normalizing_transform(source.vertices, up_axis="y")
    generator = np.random.default_rng(0)
    points = generator.uniform(-1.0, 1.0, size=(400, 3))
    norms = np.linalg.norm(points, axis=1)
    clear = (norms < 0.7) | (norms > 0.8)
    inside = mesh_occupancy(source, transform, points)
    assert source.is_watertight
    np.testing.assert_array_equal(inside[clear], norms[clear] < 0.75)

    holed = source.copy()
    holed.update_faces(np.arange(len(holed.faces)) != 0)
    assert not holed.is_watertight
    holed_inside = mesh_occupancy(holed, transform, torch.from_numpy(points))
    assert isinstance(holed_inside, torch.Tensor)
    np.testing.assert_array_equal(holed_inside.numpy()[clear], norms[clear] < 0.75)
    w = winding_numbers(source, trimesh.transform_points(np.zeros((1, 3)), np.linalg.inv(transform)))
    assert abs(w[0]) == pytest.approx(1.0, abs=1e-6)
