"""Rendering a trained generator from any camera (``triplane-gan render``) and exporting meshes
(``triplane-gan export-mesh``): determinism, closed orbits, output files, marching cubes and baked textures on
analytic fields, one-line errors for bad input, and the library functions giving the command's very files."""

from __future__ import annotations

import itertools
import math
import re
import struct
import subprocess
import sys
from pathlib import Path
from typing import List

import numpy as np
import pytest
import torch
import trimesh
from PIL import Image

from triplane_gan_ns.errors import UserError
from triplane_gan_ns.latents import Latent, latents_from_args, load_latent, resolve_class, save_latent
from triplane_gan_ns.export.mesh import export_mesh, latent_field_fns, mrc_bytes, write_mesh
from triplane_gan_ns.surface import (
    automatic_threshold,
    density_grid,
    extract_mesh,
    keep_largest_components,
    mesh_from_grid,
    opaque_level,
    simplify_mesh,
)
from triplane_gan_ns.texture import BORDER, bake_texture, dilate, rasterise, textured_mesh, uv_unwrap
from triplane_gan_ns.export.video import mp4_codec, orbit_cameras, render_latents, render_view, render_views
from triplane_gan_ns.runs import load_model

TRIPLANE_GAN = str(Path(sys.executable).with_name("triplane-gan"))
CLASS_NAMES = ["cube", "cylinder", "sphere", "torus"]


def _cli(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([TRIPLANE_GAN, *args], capture_output=True, text=True, timeout=timeout)


def _error_lines(result: subprocess.CompletedProcess) -> List[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]


@pytest.fixture(scope="module")
def run_dir(trained_tiny_run):  # noqa: F811
    return trained_tiny_run


@pytest.fixture(scope="module")
def model(run_dir):
    model, _ = load_model(run_dir / "config.yml")
    return model


def _cameras(model, num: int, resolution: int, closed: bool = False):
    sampler = model.pose_sampler.config
    return orbit_cameras(num, resolution, sampler.radius, sampler.fov_degrees, 20.0, closed=closed)


# ---- latents ------------------------------------------------------------------------------------------------
def test_classes_by_index_or_name_and_clear_errors():
    assert resolve_class("2", CLASS_NAMES) == 2 and resolve_class(3, CLASS_NAMES) == 3
    assert resolve_class("sphere", CLASS_NAMES) == 2 and resolve_class("Torus", CLASS_NAMES) == 3
    with pytest.raises(UserError, match=r"class 4 is out of range; valid: an index 0\.\.3"):
        resolve_class("4", CLASS_NAMES)
    with pytest.raises(UserError, match="unknown class 'chair'.*cube, cylinder, sphere, torus"):
        resolve_class("chair", CLASS_NAMES)
    many = [f"c{i}" for i in range(1000)]
    with pytest.raises(UserError, match=r"\.\.\. \(1000 classes"):
        resolve_class("nope", many)


def test_latents_are_reproducible_and_round_trip_through_files(model, tmp_path):
    a = Latent(class_index=1, seed=5, truncation_psi=0.7).ws(model)
    b = Latent(class_index=1, seed=5, truncation_psi=0.7).ws(model)
    assert torch.equal(a, b)
    assert not torch.equal(a, Latent(class_index=1, seed=6, truncation_psi=0.7).ws(model))
    assert not torch.equal(a, Latent(class_index=2, seed=5, truncation_psi=0.7).ws(model))
    expected = model.generator_ema.mapping(model.seeded_latents([5]), torch.tensor([1]), 0.7)
    assert torch.equal(a, expected)

    save_latent(tmp_path / "mine.pt", a, 1)
    loaded = load_latent(tmp_path / "mine.pt", model)
    assert loaded.class_index == 1 and loaded.name == "latent-mine" and torch.equal(loaded.ws(model), a)
    assert [l.name for l in latents_from_args(model, ["0", "sphere"], [0, 1], 0.7)] == [
        "class0_seed0", "class0_seed1", "class2_seed0", "class2_seed1",
    ]

    torch.save({"ws": a[:, :2], "class_index": 1}, tmp_path / "short.pt")
    with pytest.raises(UserError, match="shape"):
        load_latent(tmp_path / "short.pt", model)
    torch.save({"ws": a, "class_index": 9}, tmp_path / "far.pt")
    with pytest.raises(UserError, match="out of range"):
        load_latent(tmp_path / "far.pt", model)


# ---- rendering ----------------------------------------------------------------------------------------------
def test_same_latent_same_camera_gives_identical_pixels(model):
    latent = Latent(class_index=2, seed=3, truncation_psi=0.7)
    for raw, resolution in ((False, 32), (True, 40)):
        cameras = _cameras(model, 3, resolution)
        first = render_views(model, latent, cameras, raw)
        second = render_views(model, latent, cameras, raw)
        for key in ("image", "depth", "accumulation"):
            assert torch.equal(first[key], second[key]), (raw, key)
        assert first["image"].shape == (3, 3, resolution, resolution)
        assert first["image"].std() > 0
        assert not torch.equal(first["image"][0], first["image"][1])  # other azimuth, other picture


def test_trained_path_matches_generate(model):
    cameras = _cameras(model, 2, model.config.generator.neural_resolution)
    latent = Latent(class_index=0, seed=7, truncation_psi=0.7)
    ours = render_views(model, latent, cameras, raw=False)
    theirs = model.generate(
        model.seeded_latents([7]), torch.tensor([0]), cameras=cameras, truncation_psi=0.7,
        noise_mode="const", use_ema=True,
    )
    torch.testing.assert_close(ours["image"], theirs["image"].clamp(0, 1), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours["accumulation"], theirs["accumulation"], atol=1e-5, rtol=1e-5)


def test_orbit_is_closed_first_and_last_frames_match(model):
    cameras = _cameras(model, 6, 24, closed=True)
    assert cameras.shape[0] == 7
    assert torch.equal(cameras.camera_to_worlds[0], cameras.camera_to_worlds[-1])
    frames = render_views(model, Latent(class_index=3, seed=1, truncation_psi=0.7), cameras, raw=True)["image"]
    assert torch.equal(frames[0], frames[-1])
    assert not torch.equal(frames[0], frames[3])


def test_superresolution_model_renders_any_resolution():
    """A model whose output (64²) exceeds its neural resolution (32²): trained path through super-resolution,
    any other size raw."""
    from nerfstudio.data.scene_box import SceneBox

    from triplane_gan_ns.method_configs.triplane_gan import triplane_gan_tiny

    torch.manual_seed(0)
    sr_model = triplane_gan_tiny.config.pipeline.model.setup(
        scene_box=SceneBox(aabb=torch.tensor([[-1.0] * 3, [1.0] * 3])),
        num_train_data=1,
        metadata={"class_names": CLASS_NAMES, "resolution": 64},
    ).eval()
    assert sr_model.generator_ema.superresolution is not None
    latent = Latent(class_index=0, seed=0, truncation_psi=0.7)
    ws = latent.ws(sr_model)
    planes = sr_model.generator_ema.planes(ws)
    trained = render_view(sr_model, ws, planes, _cameras(sr_model, 1, 32), raw=False)
    assert trained["image"].shape == (3, 64, 64) and trained["depth"].shape == (1, 32, 32)
    raw = render_view(sr_model, ws, planes, _cameras(sr_model, 1, 48), raw=True, rays_per_chunk=1000)
    assert raw["image"].shape == (3, 48, 48) and raw["accumulation"].shape == (1, 48, 48)


def test_render_command_writes_grid_video_depth_and_opacity(run_dir, model, tmp_path):
    out = tmp_path / "renders"
    save_latent(tmp_path / "saved.pt", Latent(class_index=2, seed=1, truncation_psi=0.7).ws(model), 2)
    result = _cli(
        "render", "--load-config", str(run_dir / "config.yml"), "--classes", "0", "sphere", "--seeds", "1",
        "--views", "4", "--frames", "6", "--output-dir", str(out),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    names = ["class0_seed1", "class2_seed1"]
    for name in names:
        for kind in ("grid", "depth", "opacity"):
            assert Image.open(out / f"{name}_{kind}.png").size == (4 * 32, 32), (name, kind)
        gif = Image.open(out / f"{name}_orbit.gif")
        assert gif.n_frames == 7 and gif.size == (32, 32)
        gif.seek(0)
        first = np.asarray(gif.convert("RGB"))
        gif.seek(6)
        assert np.array_equal(first, np.asarray(gif.convert("RGB")))
    if mp4_codec() is not None:
        import av

        with av.open(str(out / "class0_seed1_orbit.mp4")) as video:
            frames = [f.to_ndarray(format="rgb24") for f in video.decode(video=0)]
        assert len(frames) == 7 and frames[0].shape == (32, 32, 3)
    assert not list(out.glob(".*tmp*"))

    # raw rendering at another size, from a saved latent file: same pixels as the (class, seed) latent
    raw = tmp_path / "raw"
    result = _cli(
        "render", "--load-config", str(run_dir / "config.yml"), "--latent", str(tmp_path / "saved.pt"),
        "--views", "2", "--frames", "2", "--resolution", "20", "--output-dir", str(raw),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "raw" in result.stdout
    grid = np.asarray(Image.open(raw / "latent-saved_grid.png"))
    assert grid.shape == (20, 40, 3)
    assert Image.open(raw / "latent-saved_opacity.png").size == (40, 20)
    expected = render_views(model, Latent(2, 1, 0.7), _cameras(model, 2, 20), raw=True)["image"]
    expected = (torch.cat(list(expected), dim=-1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    assert np.abs(grid.astype(int) - expected).max() <= 1  # another process: allow a rounding step


# ---- meshes of analytic fields ----------------------------------------------------------------------------
def _ball(centre, radius: float, value: float = 20.0):
    centre_t = torch.tensor(centre, dtype=torch.float32)
    return lambda p: ((p - centre_t).norm(dim=-1) < radius).float() * value


def test_sphere_of_density_gives_a_watertight_sphere_of_the_right_radius():
    resolution, bound = 64, 1.0
    voxel = 2 * bound / (resolution - 1)
    red = lambda p: torch.tensor([1.0, 0.0, 0.0]).expand(p.shape[0], 3)  # noqa: E731
    mesh = extract_mesh(_ball((0, 0, 0), 0.5), red, resolution, bound, threshold=10.0)
    distance = np.linalg.norm(mesh.vertices, axis=1)
    assert abs(distance.mean() - 0.5) < voxel, distance.mean()
    assert distance.min() > 0.5 - voxel and distance.max() < 0.5 + voxel
    assert mesh.is_watertight and mesh.is_winding_consistent
    assert mesh.volume == pytest.approx(4 / 3 * math.pi * 0.5**3, rel=0.1)  # positive: normals point out
    assert (mesh.visual.vertex_colors[:, :3] == [255, 0, 0]).all()


def test_floater_removal_keeps_the_big_component():
    big, small = _ball((0, 0, 0), 0.5), _ball((0.75, 0.75, 0.75), 0.12)
    field = lambda p: big(p) + small(p)  # noqa: E731
    both = extract_mesh(field, None, 48, 1.0, threshold=10.0, keep_components=0)
    assert len(both.split(only_watertight=False)) == 2
    kept = extract_mesh(field, None, 48, 1.0, threshold=10.0, keep_components=1)
    assert len(kept.split(only_watertight=False)) == 1 and kept.is_watertight
    assert np.linalg.norm(kept.vertices, axis=1).max() < 0.6
    assert len(kept.faces) < len(both.faces)
    assert keep_largest_components(both, 5).faces.shape == both.faces.shape


def test_mesh_stays_inside_the_scene_box_and_is_closed_where_the_box_cuts_it():
    bound = 0.8
    mesh = extract_mesh(_ball((0.3, 0, 0), 0.9), None, 40, bound, threshold=10.0)
    assert (np.abs(mesh.vertices) <= bound + 1e-6).all()
    assert np.isclose(mesh.vertices[:, 0].max(), bound)  # the ball is cut by the face x = bound
    assert mesh.is_watertight


def test_threshold_never_reached_is_a_user_error():
    with pytest.raises(UserError, match="never exceeds the threshold 10"):
        extract_mesh(_ball((0, 0, 0), 0.5, value=3.0), None, 16, 1.0, threshold=10.0)


def _ramp_ball(slope: float, radius: float):
    """Density ``slope * (radius - r)`` inside the ball, 0 outside: along a ray through the centre, ``s`` deep
    into the ball, the optical depth is ``slope s² / 2``."""
    return lambda p: slope * (radius - p.norm(dim=-1)).clamp(min=0)


def _radial_rays(num: int, distance: float = 2.0):
    """Rays from random points at ``distance`` from the centre, aimed at it."""
    towards = torch.nn.functional.normalize(torch.randn(num, 3, generator=torch.Generator().manual_seed(0)), dim=-1)
    return towards * distance, -towards


def test_automatic_threshold_is_where_rays_become_opaque_on_an_analytic_ball():
    """Opacity 1/2 is optical depth ln 2, reached ``s = sqrt(2 ln 2 / slope)`` deep, where the density is
    ``sqrt(2 ln 2 slope)``; every ray through the centre crosses there."""
    slope, radius = 40.0, 0.6
    expected = math.sqrt(2 * math.log(2) * slope)  # 7.45, reached 0.19 deep: inside the ball
    level, opacity = automatic_threshold(_ramp_ball(slope, radius), *_radial_rays(300), bound=1.0)
    assert opacity == 0.5 and level == pytest.approx(expected, rel=0.01)
    # a denser ball becomes opaque sooner, at a higher density
    assert automatic_threshold(_ramp_ball(4 * slope, radius), *_radial_rays(300), bound=1.0)[0] == pytest.approx(2 * expected, rel=0.01)

    # a faint ball never gets opaque: the level is where the rays reach half their own opacity instead
    faint = 1.0
    most = 1 - math.exp(-faint * radius**2)  # the whole chord: optical depth slope * radius²
    depth = math.sqrt(-2 * math.log(1 - most / 2) / faint)
    level, opacity = automatic_threshold(_ramp_ball(faint, radius), *_radial_rays(300), bound=1.0)
    assert opacity == pytest.approx(most / 2, rel=1e-3) and level == pytest.approx(faint * depth, rel=0.01)

    with pytest.raises(UserError, match="zero along every ray"):
        automatic_threshold(lambda p: torch.zeros(p.shape[0]), *_radial_rays(10), bound=1.0)


def test_opaque_level_is_the_median_over_opaque_rays():
    deltas = torch.full((4, 3), 0.5)
    density = torch.tensor([[0.0, 3.0, 9.0], [1.0, 2.0, 4.0], [0.1, 0.1, 0.1], [5.0, 0.0, 0.0]])
    # opacity after each sample: ray 0 crosses 1/2 in sample 1 (3), ray 1 in sample 1 (2), ray 3 in sample 0
    # (5); ray 2 never does
    assert opaque_level(density, deltas) == (3.0, 0.5)


def test_mrc_header_and_data():
    grid = np.random.default_rng(0).random((5, 6, 7), dtype=np.float32)
    data = mrc_bytes(grid, voxel_size=0.5, origin=-1.0)
    assert len(data) == 1024 + grid.size * 4
    assert struct.unpack_from("<4i", data, 0) == (5, 6, 7, 2)
    assert struct.unpack_from("<3f", data, 40) == (2.5, 3.0, 3.5)
    assert struct.unpack_from("<3f", data, 196) == (-1.0, -1.0, -1.0)
    assert data[208:212] == b"MAP "
    body = np.frombuffer(data[1024:], dtype="<f4").reshape(7, 6, 5)  # sections, rows, columns
    assert np.array_equal(body.transpose(2, 1, 0), grid)


# ---- textures of analytic fields ---------------------------------------------------------------------------
def _position_colour(p: torch.Tensor) -> torch.Tensor:
    """RGB = (x + 1) / 2, (y + 1) / 2, (z + 1) / 2: linear, each channel changes by 0.5 per world unit."""
    return (p + 1) / 2


COLOUR_GRADIENT = 0.5
"""Largest rate of change of any channel of ``_position_colour`` per world unit."""


def _bilinear(image: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Bilinear samples (texel centres at ``((col + 0.5) / w, 1 - (row + 0.5) / h)``, edges clamped) and the
    rows and columns of their four taps."""
    h, w = image.shape[:2]
    x, y = uv[:, 0] * w - 0.5, (1 - uv[:, 1]) * h - 0.5
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    rows = np.clip(np.stack([y0, y0, y0 + 1, y0 + 1]), 0, h - 1)
    cols = np.clip(np.stack([x0, x0 + 1, x0, x0 + 1]), 0, w - 1)
    taps = image[rows, cols].astype(np.float64)
    value = taps[0] * (1 - fx) * (1 - fy) + taps[1] * fx * (1 - fy) + taps[2] * (1 - fx) * fy + taps[3] * fx * fy
    return value, rows, cols


def _texel_stretch(mesh: trimesh.Trimesh, uv: np.ndarray, size: int) -> np.ndarray:
    """Per face, the longest world distance one texel of the texture maps to (largest singular value of the
    texture-to-surface map)."""
    tri_uv = uv[mesh.faces] * size
    edges_uv = np.stack([tri_uv[:, 1] - tri_uv[:, 0], tri_uv[:, 2] - tri_uv[:, 0]], axis=-1)  # [f, 2, 2]
    edges_3d = np.stack([mesh.triangles[:, 1] - mesh.triangles[:, 0], mesh.triangles[:, 2] - mesh.triangles[:, 0]], -1)
    jacobian = edges_3d @ np.linalg.inv(edges_uv)  # [f, 3, 2]: world per texel
    return np.linalg.svd(jacobian, compute_uv=False)[:, 0]


def _texture_errors(mesh: trimesh.Trimesh, image: np.ndarray, count: int = 100_000):
    """|texture - field| at the vertices and at random surface points, in [0, 1] units per channel."""
    image = image[..., :3].astype(np.float64) / 255
    at_vertices = np.abs(_bilinear(image, mesh.visual.uv)[0] - _position_colour(torch.tensor(mesh.vertices)).numpy())
    points, face = trimesh.sample.sample_surface(mesh, count, seed=0)
    bary = trimesh.triangles.points_to_barycentric(mesh.triangles[face], points)
    uv = np.einsum("kj,kjd->kd", bary, mesh.visual.uv[mesh.faces[face]])
    at_points = np.abs(_bilinear(image, uv)[0] - _position_colour(torch.tensor(points)).numpy())
    return at_vertices, at_points


def test_textured_sphere_reloads_from_glb_and_obj_with_the_field_colours(tmp_path):
    """Bounds: a bilinear sample of a linear colour inside one triangle's footprint is exact up to the texels'
    rounding to 1/255 (at most 0.5/255 per texel), so the mean error stays below 0.5/255.  Near chart edges and
    kinks between triangles, the four taps (within sqrt(2) texels of the sample) hold colours of surface points
    at most ``sqrt(2) + BORDER`` texels away along the chart, i.e. ``(sqrt(2) + BORDER) * stretch`` world units,
    so no sample is off by more than ``0.5/255 + COLOUR_GRADIENT * (sqrt(2) + BORDER) * max stretch`` (unless two
    stretches of one chart's boundary come within a few texels of each other, which xatlas does not prevent: on
    a 150k-face sphere at 1024² that put about 1 sample in 10^4 above 3/255, none here)."""
    size = 256
    mesh = extract_mesh(_ball((0, 0, 0), 0.6), None, 40, 1.0, threshold=10.0)
    textured = textured_mesh(mesh, _position_colour, size, name="sphere")
    assert len(textured.faces) == len(mesh.faces)
    write_mesh(tmp_path / "sphere.glb", textured)
    write_mesh(tmp_path / "obj" / "sphere.obj", textured)
    assert sorted(p.name for p in (tmp_path / "obj").iterdir()) == ["sphere.mtl", "sphere.obj", "sphere.png"]
    assert "map_Kd sphere.png" in (tmp_path / "obj" / "sphere.mtl").read_text()

    glb = trimesh.load(tmp_path / "sphere.glb", force="mesh")
    obj = trimesh.load(tmp_path / "obj" / "sphere.obj", force="mesh")
    for reloaded, image in (
        (glb, np.asarray(glb.visual.material.baseColorTexture)),
        (obj, np.asarray(obj.visual.material.image)),
    ):
        assert image.shape[:2] == (size, size)
        uv = reloaded.visual.uv
        assert uv.shape == (len(reloaded.vertices), 2) and (uv >= 0).all() and (uv <= 1).all()
        assert reloaded.area == pytest.approx(mesh.area, rel=1e-4)
        stretch = _texel_stretch(reloaded, uv, size)
        tri_uv = uv[reloaded.faces]
        uv_area = np.abs(np.cross(tri_uv[:, 1] - tri_uv[:, 0], tri_uv[:, 2] - tri_uv[:, 0])).sum() / 2
        assert uv_area > 0.25 and stretch.max() < 0.04  # the charts fill much of the texture, undistorted
        at_vertices, at_points = _texture_errors(reloaded, image)
        bound = 0.5 / 255 + COLOUR_GRADIENT * (math.sqrt(2) + BORDER) * stretch.max()
        for errors in (at_vertices, at_points):
            assert errors.mean() < 0.5 / 255, errors.mean() * 255
            assert errors.max() < bound, (errors.max() * 255, bound * 255)


def test_faces_xatlas_leaves_out_collapse_onto_a_neighbouring_vertex():
    """xatlas leaves out faces below float32's area epsilon (after scaling to a mean face area of 1): here two
    slivers of 1e-9 of the mean area.  They must not stretch across the atlas (they would paint over other charts)."""
    mesh = extract_mesh(_ball((0, 0, 0), 0.6), None, 24, 1.0, threshold=10.0)
    mesh.merge_vertices()
    vertices, faces = np.asarray(mesh.vertices), np.asarray(mesh.faces)
    a, b, c = faces[0]
    vertices = np.vstack([vertices, vertices[a] + 1e-9 * (vertices[b] + vertices[c] - 2 * vertices[a])])
    m = len(vertices) - 1  # face 0 becomes one ordinary face and two slivers along its sides at a
    faces = np.vstack([[m, b, c], [a, b, m], [a, m, c], faces[1:]])
    source, new_faces, uv = uv_unwrap(vertices, faces, 256)
    assert np.array_equal(source[new_faces], faces)
    assert (uv >= 0).all() and (uv <= 1).all()
    slivers = uv[new_faces[1:3]].reshape(-1, 2)
    assert (slivers == slivers[0]).all()
    charted = new_faces[3:].ravel()
    assert (np.abs(uv[charted[source[charted] == a]] - slivers[0]).max(axis=-1) == 0).any()
    tri = uv[new_faces] * 256
    assert (np.abs(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])) / 2).max() < 50


def test_rasterised_texels_are_the_centres_inside_each_triangle():
    # the centres (c + 0.5, r + 0.5) inside x + y <= 4 are those with c + r <= 3: 10 texels
    triangle = np.array([[[0.0, 0.0], [4.0, 0.0], [0.0, 4.0]]])
    chunks = list(rasterise(triangle, 8, chunk=3))
    texel = np.concatenate([t for t, _, _, _ in chunks])
    bary = np.concatenate([b for _, _, b, _ in chunks])
    rows, cols = texel // 8, texel % 8
    assert sorted(zip(rows, cols)) == [(r, c) for r in range(4) for c in range(4) if r + c <= 3]
    centres = np.stack([cols + 0.5, rows + 0.5], axis=-1)
    np.testing.assert_allclose(bary @ triangle[0], centres, atol=1e-12)
    # with a margin, the texels just outside come too, their points clamped onto the triangle
    texel = np.concatenate([t for t, _, _, _ in rasterise(triangle, 8, margin=1.0)])
    assert len(texel) > 10 and (texel // 8 + texel % 8 <= 5).all()
    # a triangle of no area covers nothing
    assert not list(rasterise(np.array([[[0.0, 0.0], [2.0, 2.0], [4.0, 4.0]]]), 8, margin=1.0))


def test_texels_between_two_charts_take_the_nearer_one():
    """Two triangles 1.6 texels apart in a 16² texture, far apart on the surface: the texel centres in the gap
    (each within BORDER of both) take the colour of the nearer triangle, whichever comes first, in one chunk of
    texels or in several."""
    size = 16
    pixels = np.array([[1.0, 1.0], [6.2, 1.0], [6.2, 15.0], [7.8, 1.0], [15.0, 1.0], [7.8, 15.0]])
    uv = np.stack([pixels[:, 0] / size, 1 - pixels[:, 1] / size], axis=-1)
    vertices = np.array([[-1.0, -1, -1], [-0.9, -1, -1], [-0.9, -0.9, -1], [1, 1, 1], [0.9, 1, 1], [1, 0.9, 1]])
    orders = (np.array([[0, 1, 2], [3, 4, 5]]), np.array([[3, 4, 5], [0, 1, 2]]))
    for faces, chunk in itertools.product(orders, (4, 256)):
        image, baked = bake_texture(_position_colour, vertices, faces, uv, size, chunk_size=chunk)
        row = 10  # away from the triangles' slanted sides
        assert baked[row, 6] and baked[row, 7]  # 0.3 and 1.3 texels outside the left one, 1.3 and 0.3 the right
        assert (image[row, 5:7] < 20).all() and (image[row, 7:9] > 230).all()


def test_dilation_grows_the_filled_texels_into_their_neighbours():
    image = np.zeros((20, 20, 3), dtype=np.uint8)
    filled = np.zeros((20, 20), dtype=bool)
    image[5:8, 5:8], filled[5:8, 5:8] = [200, 100, 50], True
    image[5:8, 13], filled[5:8, 13] = [0, 100, 250], True
    grown, mask = dilate(image, filled, 2)
    expected = np.zeros_like(filled)
    expected[3:10, 3:10] = expected[3:10, 11:16] = True
    assert np.array_equal(mask, expected)
    assert (grown[3:10, 3:10] == [200, 100, 50]).all() and (grown[3:10, 11:16] == [0, 100, 250]).all()
    assert (grown[~mask] == 0).all() and np.array_equal(grown[filled], image[filled])
    # where two regions meet, a texel takes the mean of its filled neighbours
    grown, mask = dilate(image, filled, 3)
    assert mask[6, 10] and (grown[6, 10] == [100, 100, 150]).all()


def test_texture_is_baked_under_every_bilinear_tap_of_the_surface():
    """Every tap a bilinear sample of the surface reads was baked from the surface itself (inside a chart or
    within ``BORDER`` texels of it), never dilated or background; the rest of the atlas is still filled."""
    size = 128
    mesh = extract_mesh(_ball((0.1, 0, 0), 0.5), None, 24, 1.0, threshold=10.0)
    textured = textured_mesh(mesh, _position_colour, size)
    image, baked = bake_texture(_position_colour, textured.vertices, textured.faces, textured.visual.uv, size)
    assert np.array_equal(image, np.asarray(textured.visual.material.baseColorTexture))
    points, face = trimesh.sample.sample_surface(textured, 50_000, seed=1)
    bary = trimesh.triangles.points_to_barycentric(textured.triangles[face], points)
    uv = np.einsum("kj,kjd->kd", bary, textured.visual.uv[textured.faces[face]])
    _, rows, cols = _bilinear(image, uv)
    assert baked[rows, cols].all()
    assert 0.3 < baked.mean() < 1  # charts cover much of the atlas, and leave gutters
    # the first ring of gutter texels holds colours between those of its baked neighbours (dilation), not a flat
    # background
    padded = np.pad(image.astype(int), ((1, 1), (1, 1), (0, 0)))
    padded_baked = np.pad(baked, 1)
    window = [(slice(1 + dy, size + 1 + dy), slice(1 + dx, size + 1 + dx)) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
    shifted = [(padded[w], padded_baked[w]) for w in window if w != window[4]]
    low = np.min([np.where(m[..., None], v, 999) for v, m in shifted], axis=0)
    high = np.max([np.where(m[..., None], v, -1) for v, m in shifted], axis=0)
    ring = ~baked & np.any([m for _, m in shifted], axis=0)
    assert ring.sum() > 100
    assert ((image[ring] >= low[ring]) & (image[ring] <= high[ring])).all()


def test_simplification_meets_the_face_budget_inside_the_box():
    mesh = extract_mesh(_ball((0.3, 0, 0), 0.9), None, 40, 0.8, threshold=10.0)
    simple = simplify_mesh(mesh, 1000, bound=0.8)
    assert 500 < len(simple.faces) <= 1000 < len(mesh.faces)
    assert (np.abs(simple.vertices) <= 0.8).all()
    assert simple.volume == pytest.approx(mesh.volume, rel=0.05)
    assert simplify_mesh(mesh, len(mesh.faces)) is mesh


# ---- meshes of the trained generator ----------------------------------------------------------------------
def test_export_mesh_of_a_generated_latent(run_dir, model, tmp_path):
    """A fixed level (the 90th percentile of the 4-step generator's own density lattice) gives the same mesh as
    marching cubes in this process; the automatic default meshes the same generator and prints its level; EG3D's
    level 10, far above this generator's density, is a clear one-line error."""
    density_fn, _ = latent_field_fns(model, Latent(class_index=1, seed=3, truncation_psi=0.7))
    grid = density_grid(density_fn, 32, model.generator_ema.config.scene_bound)
    threshold = float(np.quantile(grid, 0.9))
    config = str(run_dir / "config.yml")

    result = _cli(
        "export-mesh", "--load-config", config, "--class", "cylinder", "--seed", "3", "--resolution", "32",
        "--density-threshold", f"{threshold:.6f}", "--output", str(tmp_path / "obj.ply"),
        "--volume", str(tmp_path / "density.mrc"),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    mesh = trimesh.load(tmp_path / "obj.ply", force="mesh")
    assert len(mesh.faces) > 200
    assert (np.abs(mesh.vertices) <= 1.0 + 1e-6).all()
    assert mesh.visual.vertex_colors.shape == (len(mesh.vertices), 4)
    data = (tmp_path / "density.mrc").read_bytes()
    volume = np.frombuffer(data[1024:], dtype="<f4").reshape(32, 32, 32).transpose(2, 1, 0)
    np.testing.assert_allclose(volume, grid, rtol=1e-5, atol=1e-6)
    in_process = mesh_from_grid(grid, 1.0, float(f"{threshold:.6f}"), keep_components=1)
    assert len(in_process.faces) == len(mesh.faces)

    result = _cli(
        "export-mesh", "--load-config", config, "--class", "1", "--seed", "3", "--resolution", "32",
        "--output", str(tmp_path / "default.glb"),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    chosen = re.search(r"density threshold: auto → ([0-9.e+-]+) \(where the renders become opaque\)", result.stdout)
    assert chosen, result.stdout[-2000:]
    level = float(chosen.group(1))
    assert grid.min() < level < grid.max()
    mesh = trimesh.load(tmp_path / "default.glb", force="mesh")
    assert len(mesh.faces) > 200 and (np.abs(mesh.vertices) <= 1.0 + 1e-6).all()

    result = _cli(
        "export-mesh", "--load-config", config, "--class", "1", "--seed", "3", "--resolution", "16",
        "--density-threshold", "10", "--output", str(tmp_path / "ten.glb"),
    )
    assert result.returncode == 1
    assert len(_error_lines(result)) == 1 and "never exceeds the threshold 10" in result.stderr
    assert not (tmp_path / "ten.glb").exists()


def test_export_mesh_below_the_occupancy_threshold_meshes_the_exact_density(model, tmp_path):
    """The occupancy grid's empty cells hold density below ``occupancy.THRESHOLD``, not zero: a level below it
    is meshed from the density at every lattice point (skipping would move the surface), one above it from the
    skipping lattice, which is then the same surface."""
    import copy

    from triplane_gan_ns.occupancy import THRESHOLD, cell_centres

    model = copy.deepcopy(model)
    latent = Latent(class_index=1, seed=3, truncation_psi=0.7)
    gen = model.generator_ema
    with torch.no_grad():  # sparse, as after training: blobs in a faint haze over 80 % of the box
        last = gen.field.decoder.layers[-1]
        last.weight[0] *= 60.0
        last.bias[0] *= 60.0
        raw = gen.field.batched_density(gen.fixed_planes(latent.ws(model)), cell_centres(32, 1.0).reshape(1, -1, 3), raw=True)
        # raw + shift + density_shift at the 80th percentile gives a density of a tenth of the threshold
        target = math.log(math.expm1(THRESHOLD / 10)) - gen.field.config.density_shift
        last.bias[0] += target - float(torch.quantile(raw, 0.8))
    planes = gen.fixed_planes(latent.ws(model))
    exact_fn, skipping_fn = gen.point_density(planes), gen.point_density(planes, THRESHOLD)
    exact, skipped = density_grid(exact_fn, 32, 1.0), density_grid(skipping_fn, 32, 1.0)
    haze = exact[skipped == 0]
    assert haze.size > 0 and haze.max() < THRESHOLD
    level = float(np.quantile(haze, 0.99))  # a faint level that some skipped points exceed
    assert (haze > level).sum() > 0
    low = export_mesh(model, latent, tmp_path / "low.ply", resolution=32, density_threshold=level)
    want = mesh_from_grid(exact, 1.0, level, keep_components=1)
    assert len(low.faces) == len(want.faces) and np.allclose(low.vertices, want.vertices, atol=1e-5)
    assert len(mesh_from_grid(skipped, 1.0, level, keep_components=1).faces) != len(want.faces)
    high = float(np.quantile(exact, 0.95))
    assert high >= THRESHOLD
    mesh = export_mesh(model, latent, tmp_path / "high.ply", resolution=32, density_threshold=high)
    assert len(mesh.faces) == len(mesh_from_grid(exact, 1.0, high, keep_components=1).faces)


def test_export_textured_mesh_of_a_generated_latent(run_dir, model, tmp_path):
    """--texture with the 4-step generator (threshold: its own 90th percentile, as above): a GLB with an embedded
    texture whose colours are the field's, and an OBJ with its MTL and PNG, simplified to --max-faces."""
    latent = Latent(class_index=1, seed=3, truncation_psi=0.7)
    density_fn, colour_fn = latent_field_fns(model, latent)
    threshold = f"{float(np.quantile(density_grid(density_fn, 32, 1.0), 0.9)):.6f}"
    common = [
        "export-mesh", "--load-config", str(run_dir / "config.yml"), "--class", "1", "--seed", "3",
        "--resolution", "32", "--density-threshold", threshold, "--texture", "--texture-size", "128",
    ]
    result = _cli(*common, "--output", str(tmp_path / "textured.glb"))
    assert result.returncode == 0, result.stderr[-3000:]
    glb = trimesh.load(tmp_path / "textured.glb", force="mesh")
    plain = mesh_from_grid(density_grid(density_fn, 32, 1.0), 1.0, float(threshold), keep_components=1)
    assert len(glb.faces) == len(plain.nondegenerate_faces().nonzero()[0]) and glb.area == pytest.approx(plain.area)
    image = np.asarray(glb.visual.material.baseColorTexture)[..., :3]
    assert image.shape == (128, 128, 3) and image.std() > 0
    uv = glb.visual.uv
    assert (uv >= 0).all() and (uv <= 1).all()
    # texels under the vertices: the field's colour there, up to the texture's resolution
    sampled = _bilinear(image.astype(np.float64) / 255, uv)[0]
    field = colour_fn(torch.as_tensor(glb.vertices, dtype=torch.float32)).clamp(0, 1).numpy()
    assert np.abs(sampled - field).mean() < 0.02, np.abs(sampled - field).mean()

    result = _cli(*common, "--max-faces", "300", "--output", str(tmp_path / "obj" / "small mesh.obj"))
    assert result.returncode == 0, result.stderr[-3000:]
    written = sorted(p.name for p in (tmp_path / "obj").iterdir())
    assert written == ["small mesh.obj", "small_mesh.mtl", "small_mesh.png"]
    obj = trimesh.load(tmp_path / "obj" / "small mesh.obj", force="mesh")
    assert 100 < len(obj.faces) <= 300 and np.asarray(obj.visual.material.image).shape[:2] == (128, 128)


# ---- bad input: one line ----------------------------------------------------------------------------------
BAD_INPUT = {
    "missing config": (
        ["render", "--load-config", "{tmp}/nope/config.yml", "--output-dir", "{tmp}/o"], "config.yml does not exist"
    ),
    "missing checkpoint": (
        ["render", "--checkpoint", "{tmp}/nope.ckpt", "--output-dir", "{tmp}/o"], "nope.ckpt does not exist"
    ),
    "render class out of range": (["render", "--classes", "7", "--output-dir", "{tmp}/o"], "0..3"),
    "render unknown class": (["render", "--classes", "chair", "--output-dir", "{tmp}/o"], "cube, cylinder"),
    "render resolution": (["render", "--resolution", "4", "--output-dir", "{tmp}/o"], "at least 8"),
    "render unwritable": (["render", "--output-dir", "{tmp}/file.txt/o"], "cannot write"),
    "render bad latent": (["render", "--latent", "{tmp}/file.txt", "--output-dir", "{tmp}/o"], "cannot be read"),
    "mesh class out of range": (["export-mesh", "--class", "4", "--output", "{tmp}/m.ply"], "0..3"),
    "mesh resolution small": (["export-mesh", "--resolution", "4", "--output", "{tmp}/m.ply"], "8..1024"),
    "mesh resolution large": (["export-mesh", "--resolution", "2048", "--output", "{tmp}/m.ply"], "8..1024"),
    "mesh suffix": (["export-mesh", "--output", "{tmp}/m.stl"], ".ply, .obj, .glb"),
    "mesh volume suffix": (["export-mesh", "--output", "{tmp}/m.ply", "--volume", "{tmp}/v.raw"], ".npy, .mrc"),
    "mesh parent not creatable": (["export-mesh", "--output", "/proc/triplane-gan/m.obj"], "cannot write to /proc"),
    "mesh parent not a folder": (["export-mesh", "--output", "{tmp}/file.txt/m.obj"], "file.txt"),
    "mesh texture in ply": (["export-mesh", "--texture", "--output", "{tmp}/m.ply"], "use .glb or .obj"),
    "mesh texture size": (["export-mesh", "--texture", "--texture-size", "32", "--output", "{tmp}/m.glb"], "64..4096"),
    "mesh max faces": (["export-mesh", "--max-faces", "2", "--output", "{tmp}/m.glb"], "0 (keep all) or at least 4"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUT))
def test_bad_input_is_one_error_line(case, run_dir, tmp_path):
    args, expected = BAD_INPUT[case]
    (tmp_path / "file.txt").write_text("not a folder, not a latent")
    args = [a.format(tmp=tmp_path) for a in args]
    if "--load-config" not in args:
        args = [args[0], "--load-config", str(run_dir / "config.yml"), *args[1:]]
    result = _cli(*args)
    assert result.returncode == 1, (result.stdout[-2000:], result.stderr[-2000:])
    lines = _error_lines(result)
    assert len(lines) == 1 and expected in lines[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


# ---- the library functions and the command line -----------------------------------------------------------
def _run_command(monkeypatch, *argv: str) -> None:
    """``triplane-gan ARGV`` in this process, through the console script's entry point."""
    from triplane_gan_ns.cli import main

    monkeypatch.setattr(sys, "argv", ["triplane-gan", *argv])
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)  # the entry point installs its own
    main.entrypoint()


def _mp4_frames(path: Path) -> List[np.ndarray]:
    import av

    with av.open(str(path)) as video:
        return [f.to_ndarray(format="rgb24") for f in video.decode(video=0)]


def _assert_same_files(cli_dir: Path, lib_dir: Path, names: List[str]) -> None:
    """The same files in both folders, byte for byte, except MP4s: the encoder here does not give the same file
    twice for the same frames (nor the same decoded pixels: up to about 11 levels apart at 20², also between two
    runs of one command), so they are compared by frame count, size and closeness; the GIF holds the same frames
    exactly."""
    assert sorted(p.name for p in cli_dir.iterdir()) == sorted(p.name for p in lib_dir.iterdir()) == sorted(names)
    for name in names:
        if name.endswith(".mp4"):
            cli_frames, lib_frames = _mp4_frames(cli_dir / name), _mp4_frames(lib_dir / name)
            assert [f.shape for f in cli_frames] == [f.shape for f in lib_frames], name
            for a, b in zip(cli_frames, lib_frames):
                assert np.abs(a.astype(int) - b).mean() < 4, name
        else:
            assert (cli_dir / name).read_bytes() == (lib_dir / name).read_bytes(), name


def test_render_latents_writes_the_files_of_the_render_command(run_dir, model, tmp_path, monkeypatch):
    config = str(run_dir / "config.yml")
    _run_command(
        monkeypatch, "render", "--load-config", config, "--classes", "0", "sphere", "--seeds", "1", "--views", "2",
        "--frames", "3", "--device", "cpu", "--output-dir", str(tmp_path / "cli"),
    )
    written = render_latents(model, [(0, 1), ("sphere", 1)], tmp_path / "lib", views=2, frames=3)
    assert all(p.parent == tmp_path / "lib" for p in written)
    _assert_same_files(tmp_path / "cli", tmp_path / "lib", [p.name for p in written])

    # from a latent file at another resolution (raw rendering), the model loaded from its config.yml
    save_latent(tmp_path / "saved.pt", Latent(class_index=2, seed=1, truncation_psi=0.7).ws(model), 2)
    _run_command(
        monkeypatch, "render", "--load-config", config, "--latent", str(tmp_path / "saved.pt"), "--views", "2",
        "--frames", "2", "--resolution", "20", "--device", "cpu", "--output-dir", str(tmp_path / "cli-raw"),
    )
    written = render_latents(config, [tmp_path / "saved.pt"], tmp_path / "lib-raw", views=2, frames=2, resolution=20, device="cpu")
    _assert_same_files(tmp_path / "cli-raw", tmp_path / "lib-raw", [p.name for p in written])

    with pytest.raises(UserError, match="give at least one class and one seed"):
        render_latents(model, [], tmp_path / "none")
    with pytest.raises(UserError, match="--frames must be at least 2"):
        render_latents(model, [(0, 0)], tmp_path / "none", frames=1)
    assert not (tmp_path / "none").exists()


def test_export_mesh_writes_the_files_of_the_export_mesh_command(run_dir, model, tmp_path, monkeypatch):
    config = str(run_dir / "config.yml")
    _run_command(
        monkeypatch, "export-mesh", "--load-config", config, "--class", "1", "--seed", "3", "--resolution", "24",
        "--device", "cpu", "--output", str(tmp_path / "cli" / "m.ply"), "--volume", str(tmp_path / "cli" / "v.mrc"),
    )
    mesh = export_mesh(model, (1, 3), tmp_path / "lib" / "m.ply", resolution=24, volume=tmp_path / "lib" / "v.mrc")
    assert len(mesh.faces) == len(trimesh.load(tmp_path / "lib" / "m.ply", force="mesh").faces) > 0
    _assert_same_files(tmp_path / "cli", tmp_path / "lib", ["m.ply", "v.mrc"])

    # textured, by class name, the model loaded from its config.yml
    _run_command(
        monkeypatch, "export-mesh", "--load-config", config, "--class", "cylinder", "--seed", "3", "--resolution",
        "24", "--texture", "--texture-size", "128", "--max-faces", "600", "--device", "cpu", "--output", str(tmp_path / "cli-tex" / "t.obj"),
    )
    export_mesh(
        config, ("cylinder", 3), tmp_path / "lib-tex" / "t.obj", resolution=24, texture=True, texture_size=128,
        max_faces=600, device="cpu",
    )
    _assert_same_files(tmp_path / "cli-tex", tmp_path / "lib-tex", ["t.obj", "t.mtl", "t.png"])

    with pytest.raises(UserError, match=r"--output m\.ply: \.ply cannot hold a texture"):
        export_mesh(model, (0, 0), Path("m.ply"), texture=True)


def test_python_example_of_the_architecture_page_runs(run_dir, tmp_path, monkeypatch):
    """docs/architecture.md's example, run on the test's trained run."""
    page = (Path(__file__).resolve().parents[1] / "docs" / "architecture.md").read_text()
    section = page.split("## Using the tools from Python", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    placeholder = 'Path("outputs/demo/triplane-gan-tiny/latest")'
    assert placeholder in code
    monkeypatch.chdir(tmp_path)
    exec(compile(code.replace(placeholder, repr(str(run_dir)).join(("Path(", ")"))), "architecture.md", "exec"), {})
    assert (tmp_path / "renders" / "class0_seed0_grid.png").is_file()
    assert (tmp_path / "renders" / "class2_seed1_orbit.gif").is_file()
    assert len(trimesh.load(tmp_path / "cube.glb", force="mesh").faces) > 0
