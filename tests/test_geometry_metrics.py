"""Geometry metrics against analytic scenes: a textured sphere seen from two cameras, spheres of known radii, and
the aligned shape comparison against true shapes moved by known rotations, scales and shifts."""

from __future__ import annotations

import math

import pytest
import torch

from triplane_gan_ns.data.shapes import CLASS_NAMES, Shape, random_shape
from triplane_gan_ns.alignment import (
    AlignmentSettings,
    SurfaceShape,
    aligned_geometry_scores,
    chamfer_distance,
    compare_shapes,
    compare_with_classes,
    fscore,
    is_class_correct,
    kabsch,
    known_shapes,
    lattice_points,
    nearest_distances,
    occupancy_iou,
    quaternion_matrices,
    random_rotations,
    summarise_classes,
    surface_moments,
)
from triplane_gan_ns.eval.geometry import camera_rays, opacity_statistics, project, reprojection_errors
from triplane_gan_ns.cameras import make_cameras, yaw_pitch_directions
from triplane_gan_ns.cameras import look_at

RADIUS = 0.5
FAR = 10.0


def _cameras(yaw_degrees, resolution=48):
    yaw = torch.tensor([math.radians(y) for y in yaw_degrees])
    eyes = 2.5 * yaw_pitch_directions(yaw, torch.full_like(yaw, 0.3))
    return make_cameras(look_at(eyes), resolution, 40.0)


def _texture(points):
    return (torch.sin(3 * points) + 1) / 2


def _render_sphere(cameras, texture=_texture):
    """Analytic ray-sphere renders: (rgb, depth, opacity) as [N, C, H, W]."""
    origins, directions = camera_rays(cameras)
    b = (origins * directions).sum(-1)
    c = (origins * origins).sum(-1) - RADIUS**2
    disc = b * b - c
    hit = disc > 0
    t = torch.where(hit, -b - disc.clamp(min=0).sqrt(), torch.full_like(b, FAR))
    points = origins + directions * t[..., None]
    rgb = torch.where(hit[..., None], texture(points), torch.ones_like(points))
    return rgb.permute(0, 3, 1, 2), t[:, None], hit[:, None].float()


def test_projection_inverts_the_pixel_rays():
    cameras = _cameras([0, 70])
    origins, directions = camera_rays(cameras)
    points = (origins + 1.7 * directions).reshape(2, -1, 3)
    uv, distance = project(points, cameras)
    h, w = 48, 48
    v, u = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    torch.testing.assert_close(uv, torch.stack([u, v], -1).reshape(1, -1, 2).expand(2, -1, -1), atol=1e-3, rtol=0)
    torch.testing.assert_close(distance, torch.full_like(distance, 1.7), atol=1e-4, rtol=0)


def test_a_consistent_scene_reprojects_without_error():
    a, b = _cameras([10]), _cameras([40])
    errors = reprojection_errors(*_render_sphere(a), a, *_render_sphere(b), b)
    assert errors["colour_l1"] < 0.02 and errors["depth_rel"] < 0.01, errors
    # a sphere seen 30 degrees apart: most, not all, of A's visible surface is visible from B
    assert 0.6 < errors["coverage"] < 0.97, errors


def test_view_dependent_paint_and_wrong_depth_are_caught():
    a, b = _cameras([10]), _cameras([40])
    painted = reprojection_errors(*_render_sphere(a), a, *_render_sphere(b, lambda p: _texture(p.roll(1, -1))), b)
    assert painted["colour_l1"] > 0.1, painted
    rgb, depth, opacity = _render_sphere(a)
    consistent = reprojection_errors(rgb, depth, opacity, a, *_render_sphere(b), b)
    floating = reprojection_errors(rgb, depth * 0.9, opacity, a, *_render_sphere(b), b)
    assert floating["depth_rel"] > 0.05, floating  # in front of the surface B sees: a depth error
    sunk = reprojection_errors(rgb, depth * 1.1, opacity, a, *_render_sphere(b), b)
    assert sunk["coverage"] < 0.5 * consistent["coverage"], sunk  # behind it: hidden, so less coverage


def test_opacity_statistics():
    opacity = torch.tensor([0.0, 0.05, 0.5, 0.95, 1.0]).view(1, 1, 1, 5)
    stats = opacity_statistics(opacity)
    assert stats == pytest.approx({"mean_opacity": 0.5, "semi_transparent_fraction": 0.2})


def test_iou_and_chamfer_of_concentric_spheres_are_analytic():
    points = lattice_points(64, 1.0)
    inner, outer = Shape(kind="sphere", size=0.4), Shape(kind="sphere", size=0.6)
    iou = occupancy_iou(inner.occupancy(points), outer.occupancy(points))
    assert iou == pytest.approx((0.4 / 0.6) ** 3, abs=0.03)
    gen = torch.Generator().manual_seed(0)
    a, b = inner.sample_surface(3000, generator=gen), outer.sample_surface(3000, generator=gen)
    assert chamfer_distance(a, b) == pytest.approx(0.2, abs=0.01)
    assert chamfer_distance(a, a) == 0.0


# ---- aligned comparison with true shapes -------------------------------------------------------------------------
SETTINGS = AlignmentSettings()


def _fibonacci_sphere(n: int, radius: float) -> torch.Tensor:
    """``n`` evenly spread points on a sphere (the golden-angle spiral)."""
    i = torch.arange(n, dtype=torch.float64)
    z = 1 - (2 * i + 1) / n
    phi = i * math.pi * (3 - math.sqrt(5))
    r = (1 - z * z).sqrt()
    return (radius * torch.stack([r * phi.cos(), r * phi.sin(), z], dim=-1)).float()


def _lumpy(seed: int, num_points: int = 8192, moment_points: int = 1 << 16) -> SurfaceShape:
    """A torus with a ball stuck on it above its rim: no proper rotation but the identity maps it onto itself.
    Area-uniform samples of the union's boundary; its moments from ``moment_points`` of them, as for the
    analytic shapes."""
    torus, ball = Shape(kind="torus", size=0.45, aspect=0.3), Shape(kind="sphere", size=0.2)
    offset = torch.tensor([0.45, 0.0, 0.2])
    gen = torch.Generator().manual_seed(seed)
    area_torus, area_ball = 4 * math.pi**2 * 0.45 * 0.135, 4 * math.pi * 0.2**2
    n_ball = round(moment_points * area_ball / (area_torus + area_ball))
    a = torus.sample_surface(moment_points - n_ball, generator=gen)
    b = ball.sample_surface(n_ball, generator=gen) + offset
    points = torch.cat([a[ball.sdf(a - offset) >= 0], b[torus.sdf(b) >= 0]])  # the parts inside the other go
    points = points[torch.randperm(len(points), generator=gen)]
    return SurfaceShape(points[:num_points], lambda p: torus.occupancy(p) | ball.occupancy(p - offset), *surface_moments(points))


def _noisy(shape: SurfaceShape, sigma: float, seed: int) -> SurfaceShape:
    noise = sigma * torch.randn(shape.surface.shape, generator=torch.Generator().manual_seed(seed))
    return SurfaceShape(shape.surface + noise, shape.inside)


def _identity_chamfer(a: SurfaceShape, b: SurfaceShape) -> float:
    """Chamfer distance of two normalised shapes left as they are (what alignment cannot beat)."""
    q = SETTINGS.query_points
    return float((nearest_distances(a.normalised[:q], b.normalised).mean() + nearest_distances(b.normalised[:q], a.normalised).mean()) / 2)


def test_random_rotations_are_proper_and_uniform():
    rotations = random_rotations(4096, seed=3)
    torch.testing.assert_close(rotations[0], torch.eye(3))
    torch.testing.assert_close(rotations @ rotations.transpose(-1, -2), torch.eye(3).expand(4096, 3, 3), atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.linalg.det(rotations), torch.ones(4096), atol=1e-5, rtol=0)
    # Haar measure: E[R] = 0 (each entry has variance 1/3, so the mean of 4096 has std 0.009); the rotation
    # angle has density (1 - cos t) / pi, so E[trace R] = E[1 + 2 cos t] = 0 and P(t < pi/2) = 1/2 - 1/pi
    assert rotations.mean(dim=0).abs().max() < 0.045
    angle = torch.arccos(((rotations.diagonal(dim1=-2, dim2=-1).sum(-1) - 1) / 2).clamp(-1, 1))
    assert float((angle < math.pi / 2).float().mean()) == pytest.approx(0.5 - 1 / math.pi, abs=0.03)
    quarter_turn_z = quaternion_matrices(torch.tensor([[math.cos(math.pi / 4), 0.0, 0.0, math.sin(math.pi / 4)]]))[0]
    torch.testing.assert_close(quarter_turn_z @ torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 1.0, 0.0]), atol=1e-6, rtol=0)
    assert not torch.equal(random_rotations(8, seed=4), random_rotations(8, seed=3)[:8])
    assert torch.equal(random_rotations(8, seed=3), random_rotations(8, seed=3))


def test_kabsch_is_a_proper_rotation_even_for_a_mirror_image():
    points = torch.randn(2, 200, 3, generator=torch.Generator().manual_seed(0))
    truth = random_rotations(3, seed=5)[1:]
    found = kabsch(points, points @ truth.transpose(-1, -2))
    torch.testing.assert_close(found, truth, atol=1e-5, rtol=0)
    mirrored = kabsch(points, points * torch.tensor([1.0, 1.0, -1.0]))
    torch.testing.assert_close(torch.linalg.det(mirrored), torch.ones(2), atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    "name, truth",
    [
        ("torus", lambda seed: SurfaceShape.from_analytic(Shape(kind="torus", size=0.47, aspect=0.33), seed=seed)),
        ("box", lambda seed: SurfaceShape.from_analytic(Shape(kind="cube", size=0.36, aspect=1.2), seed=seed)),
        ("cylinder", lambda seed: SurfaceShape.from_analytic(Shape(kind="cylinder", size=0.4, aspect=0.7), seed=seed)),
        ("lumpy", _lumpy),
    ],
)
def test_alignment_recovers_a_random_rotation(name, truth):
    """Another surface sample of the true shape, turned by a random rotation and jittered by noise of 0.5% of its
    size, aligns back: its Chamfer distance is the sampling floor (mean distance to the nearest of 8192 other
    samples, ~ sqrt(area / 8192) / 2 ~ 0.02 RMS radii), within 10% of that of the unturned sample."""
    target, sample = truth(1), truth(2)
    rotation = random_rotations(2, seed=11)[1]
    generated = _noisy(sample, 0.005 * sample.scale, seed=3).transformed(rotation)
    result = compare_shapes(generated, target, SETTINGS)
    floor = _identity_chamfer(_noisy(sample, 0.005 * sample.scale, seed=3), target)
    assert floor < 0.03, floor
    assert result.chamfer < 1.1 * floor, (result.chamfer, floor)
    assert result.fscore > 0.97 and result.iou > 0.93, result
    assert _identity_chamfer(generated, target) > 4 * floor  # the turn matters: unaligned, it is far off
    torch.testing.assert_close(torch.linalg.det(result.rotation), torch.tensor(1.0), atol=1e-5, rtol=0)
    if name == "lumpy":  # no symmetry: the aligned points land where they started, point by point
        back = sample.normalised @ (result.rotation @ rotation).T
        assert float((back - sample.normalised).norm(dim=-1).mean()) < 0.02


def test_a_wrong_shape_stays_far():
    torus = Shape(kind="torus", size=0.47, aspect=0.33)
    truth = SurfaceShape.from_analytic(torus, seed=1)
    turn = random_rotations(2, seed=12)[1]
    right = compare_shapes(SurfaceShape.from_analytic(torus, seed=2).transformed(turn), truth, SETTINGS)
    again = compare_shapes(SurfaceShape.from_analytic(torus, seed=2).transformed(turn), truth, SETTINGS)
    assert (again.chamfer, again.fscore, again.iou) == (right.chamfer, right.fscore, right.iou)  # deterministic
    wrong = compare_shapes(SurfaceShape.from_analytic(Shape(kind="cube", size=0.36), seed=2).transformed(turn), truth, SETTINGS)
    assert right.fscore > 0.97 and wrong.fscore < 0.3, (right, wrong)
    assert wrong.chamfer > 5 * right.chamfer and wrong.iou < 0.5 * right.iou, (right, wrong)


def test_scores_do_not_depend_on_scale_or_position():
    truth = _lumpy(1)
    generated = _lumpy(2).transformed(random_rotations(2, seed=13)[1])
    moved = generated.transformed(torch.eye(3), scale=1.7, shift=torch.tensor([0.2, -0.1, 0.3]))
    a, b = compare_shapes(generated, truth, SETTINGS), compare_shapes(moved, truth, SETTINGS)
    assert b.chamfer == pytest.approx(a.chamfer, rel=1e-3) and b.fscore == pytest.approx(a.fscore, abs=2e-3)
    assert b.iou == pytest.approx(a.iou, abs=0.01)
    torch.testing.assert_close(b.rotation, a.rotation, atol=1e-3, rtol=0)
    # the true shape's scale and position do not matter either
    c = compare_shapes(generated, truth.transformed(torch.eye(3), scale=0.4, shift=torch.tensor([-0.3, 0.0, 0.1])), SETTINGS)
    assert c.chamfer == pytest.approx(a.chamfer, rel=1e-3) and c.iou == pytest.approx(a.iou, abs=0.01)


def test_fscore_of_concentric_spheres_is_analytic():
    """Radii 1 and 1 + d at tau = 0.05: every point of one sphere lies d from the other sphere, so F = 1 for
    d < tau and 0 for d > tau.  The 10000-point Fibonacci lattice puts every point of the unit sphere within
    0.026 of a sample (checked below), so the nearest sample lies between d and sqrt(d^2 + 0.026^2): d = 0.03 ->
    below 0.040, d = 0.07 -> at least 0.07.  Normalising for scale maps both spheres onto the unit-RMS sphere,
    so the aligned comparison of two spheres of any radii scores F = 1: the point sets are given in normalised
    units directly."""
    unit = _fibonacci_sphere(10000, 1.0)
    probe = torch.randn(10000, 3, generator=torch.Generator().manual_seed(0))
    assert float(nearest_distances(probe / probe.norm(dim=-1, keepdim=True), unit).max()) < 0.026
    for d, expected in ((0.03, 1.0), (0.07, 0.0)):
        f, precision, recall = fscore(_fibonacci_sphere(10000, 1.0 + d), unit, tau=0.05)
        assert (f, precision, recall) == (expected, expected, expected), d
    inner, outer = Shape(kind="sphere", size=0.3), Shape(kind="sphere", size=0.6)
    scaled = compare_shapes(SurfaceShape.from_analytic(outer, seed=2), SurfaceShape.from_analytic(inner, seed=1), SETTINGS)
    assert scaled.fscore > 0.98 and scaled.iou > 0.97, scaled


def test_class_correct_picks_each_true_class():
    """Each class's instance, turned at random, is closest to its own class among one other instance per class
    (with a quarter of the default coarse rotations and half the candidates: 16 alignments)."""
    settings = AlignmentSettings(num_rotations=1024, num_candidates=2)
    gen = torch.Generator().manual_seed(21)
    truths = {c: [SurfaceShape.from_analytic(random_shape(c, gen), seed=c)] for c in range(len(CLASS_NAMES))}
    turns = random_rotations(len(CLASS_NAMES) + 1, seed=22)[1:]
    labels, comparisons = [], []
    for c in range(len(CLASS_NAMES)):
        generated = SurfaceShape.from_analytic(random_shape(c, gen), seed=10 + c).transformed(turns[c])
        by_class = compare_with_classes(generated, truths, settings)
        assert is_class_correct(c, by_class), (CLASS_NAMES[c], {k: v.chamfer for k, v in by_class.items()})
        assert not is_class_correct((c + 1) % len(CLASS_NAMES), by_class)
        labels.append(c)
        comparisons.append(by_class)
    labels.append(2)  # an object without surface: counts against its class, F-score and IoU 0
    comparisons.append(None)
    summary = summarise_classes(labels, comparisons, CLASS_NAMES)
    assert summary["shape_class_correct"] == 3 and summary["shape_num_classes"] == 4
    assert summary["shape_class_correct_fraction/torus"] == 0.5 and summary["shape_empty_fraction"] == 0.2
    assert summary["shape_fscore/torus"] == pytest.approx(comparisons[2][2].fscore / 2)
    assert summary["shape_chamfer/torus"] == pytest.approx(comparisons[2][2].chamfer)
    assert summary["shape_fscore"] == pytest.approx(sum(summary[f"shape_fscore/{c}"] for c in CLASS_NAMES) / 4)


def test_a_density_lattice_scores_against_the_truth():
    """The generated-object path (marching cubes of a density lattice, inside = trilinear density above the
    threshold) on the density of a known, asymmetric shape: it matches that shape.  A wrong axis order in the
    inside test would turn the ball to another side and cost IoU."""
    torus, ball = Shape(kind="torus", size=0.45, aspect=0.3), Shape(kind="sphere", size=0.2)
    offset = torch.tensor([0.45, 0.0, 0.2])
    points = lattice_points(64, 1.0)
    sdf = torch.minimum(torus.sdf(points), ball.sdf(points - offset))
    grid = (20 * torch.sigmoid(-sdf / 0.02)).numpy()  # 10 (the threshold) on the surface
    generated = SurfaceShape.from_density_grid(grid, 1.0, 10.0, seed=0)
    truth = _lumpy(1)
    result = compare_shapes(generated.transformed(random_rotations(2, seed=14)[1]), truth, SETTINGS)
    assert result.fscore > 0.95 and result.iou > 0.9, result
    assert SurfaceShape.from_density_grid(grid, 1.0, 25.0) is None  # never dense enough: no surface


def test_scores_of_a_generator(tiny_model):
    """The training-side entry point on an untrained generator, at a threshold its density crosses (it starts
    near softplus(-1) = 0.31 everywhere): finite scores in range and the F-score matrix of every class against
    every class.  The plumbing is under test, so the alignment is cut short."""
    shapes = {c: [random_shape(c, torch.Generator().manual_seed(c))] for c in range(4)}
    settings = AlignmentSettings(num_rotations=256, num_candidates=1, plane_iterations=2, reference_points=512, query_points=512)
    generator = tiny_model.generator_ema
    details = {}
    scores = aligned_geometry_scores(
        generator, shapes, num_per_class=1, resolution=24, threshold=0.29, settings=settings, class_names=CLASS_NAMES, details=details
    )
    assert scores["shape_empty_fraction"] < 1 and scores["shape_num_classes"] == 4
    for key in ("shape_fscore", "shape_iou", *(f"shape_fscore/{c}" for c in CLASS_NAMES)):
        assert 0 <= scores[key] <= 1, key
    assert math.isfinite(scores["shape_chamfer"]) and scores["shape_chamfer"] > 0
    assert set(details["fscore_matrix"]) <= set(CLASS_NAMES)
    for row in details["fscore_matrix"].values():
        assert set(row) == set(CLASS_NAMES) and all(0 <= v <= 1 for v in row.values())


def test_known_shapes_reads_analytic_and_mesh_truths(tmp_path):
    """``shape.json`` of the embedded data (an analytic shape) and of mesh renders (a mesh file and its transform)
    become true shapes; the mesh one scores as its analytic twin."""
    import json

    import trimesh

    torus = Shape(kind="torus", size=0.45, aspect=0.3)
    mesh = trimesh.creation.torus(major_radius=0.45, minor_radius=0.135, major_sections=96, minor_sections=48)
    mesh.export(tmp_path / "torus.ply")
    files, labels = [], []
    for label, (name, spec) in enumerate(
        [("a", torus.to_dict()), ("b", {"kind": "mesh", "source": str(tmp_path / "torus.ply"), "transform": torch.eye(4).tolist()})]
    ):
        (tmp_path / name / "rgb").mkdir(parents=True)
        (tmp_path / name / "shape.json").write_text(json.dumps(spec))
        files += [tmp_path / name / "rgb" / "000000.png", tmp_path / name / "rgb" / "000001.png"]
        labels += [label, label]
    shapes = known_shapes(files, labels, per_class=3)
    assert list(shapes) == [0, 1] and len(shapes[0]) == len(shapes[1]) == 1
    assert shapes[0][0] == torus and isinstance(shapes[1][0], SurfaceShape)
    truth = SurfaceShape.from_analytic(torus, seed=1)
    result = compare_shapes(shapes[1][0].transformed(random_rotations(2, seed=15)[1]), truth, SETTINGS)
    assert result.fscore > 0.97 and result.iou > 0.93, result
    assert known_shapes([tmp_path / "c" / "rgb" / "000000.png"], [0]) == {}  # no shape.json: no true shapes
