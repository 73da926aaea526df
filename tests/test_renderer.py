"""The plain-tensor renderer and the chunked decoder against an independent reference built from nerfstudio's
own collider, samplers and renderers, a 3D ``grid_sample`` over stacked planes and a layer-by-layer decoder
(the implementation they replaced): same images, depths and gradients on fixed seeds, in both modes."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from nerfstudio.cameras.rays import RayBundle
from nerfstudio.data.scene_box import SceneBox
from nerfstudio.model_components.ray_samplers import PDFSampler, UniformSampler
from nerfstudio.model_components.renderers import AccumulationRenderer, DepthRenderer, RGBRenderer
from nerfstudio.model_components.scene_colliders import AABBBoxCollider

from triplane_gan_ns.fields.decoder import Decoder
from triplane_gan_ns.fields.triplane import PLANE_AXES, TriplaneFieldConfig


def reference_query(field, planes, positions, latent_index):
    """Old sampler: the 3B planes as the depth axis of one volume, one trilinear read landing on each slice;
    then the decoder layer by layer with plain autograd."""
    batch, _, channels, res, _ = planes.shape
    num = positions.shape[0]
    normed = positions / field.scene_bound
    depth = 3 * batch
    volume = planes.reshape(1, depth, channels, res, res).permute(0, 2, 1, 3, 4)
    uv = torch.stack([normed[:, list(axes)] for axes in PLANE_AXES], dim=1)
    slices = latent_index.reshape(num, 1) * 3 + torch.arange(3)
    w = (2.0 * slices.to(positions.dtype) + 1.0) / depth - 1.0
    grid = torch.cat([uv, w.unsqueeze(-1)], dim=-1).reshape(1, 1, 1, num * 3, 3)
    sampled = F.grid_sample(volume, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    h = sampled.reshape(channels, num, 3).permute(1, 2, 0).mean(dim=1)
    layers = field.decoder.layers
    for i, layer in enumerate(layers):
        h = F.linear(h, layer.effective_weight(), layer.bias)
        if i < len(layers) - 1:
            h = F.softplus(h)
    density = F.softplus(h[:, :1] + field.config.density_shift)
    features = torch.sigmoid(h[:, 1:]) * (1 + 2e-3) - 1e-3
    inside = (positions.abs() <= field.scene_bound).all(dim=-1, keepdim=True)
    return density * inside, features


def reference_render(gen, planes, origins, directions, latent_index):
    """nerfstudio's collider, uniform + PDF samplers and renderers around the reference field."""
    c = gen.config
    training = gen.training
    collider = AABBBoxCollider(SceneBox(aabb=torch.tensor([[-1.0] * 3, [1.0] * 3]) * c.scene_bound))
    coarse_sampler = UniformSampler(num_samples=c.num_coarse_samples).train(training)
    pdf_sampler = PDFSampler(num_samples=c.num_importance_samples, include_original=True).train(training)
    rgb_renderer = RGBRenderer(background_color=c.background).train(training)
    rays = RayBundle(origins=origins, directions=directions, pixel_area=torch.ones(origins.shape[0], 1))
    rays = collider(rays)

    def query(samples):
        positions = samples.frustums.get_positions()
        shape = positions.shape[:-1]
        index = latent_index[:, None].expand(shape).reshape(-1)
        density, features = reference_query(gen.field, planes, positions.reshape(-1, 3), index)
        return density.reshape(*shape, 1), features.reshape(*shape, -1)

    with torch.no_grad():
        coarse = coarse_sampler(rays)
        coarse_weights = coarse.get_weights(query(coarse)[0])
    samples = pdf_sampler(rays, coarse, coarse_weights)
    density, features = query(samples)
    weights = samples.get_weights(density)
    return {
        "rgb": rgb_renderer(rgb=features[..., :3], weights=weights),
        "features": torch.sum(weights * features, dim=-2),
        "depth": DepthRenderer(method="expected")(weights=weights, ray_samples=samples),
        "accumulation": AccumulationRenderer()(weights=weights),
    }


def _rays(batch: int, per_latent: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    origins = torch.nn.functional.normalize(torch.randn(batch * per_latent, 3, generator=g), dim=-1) * 2.5
    targets = (torch.rand(batch * per_latent, 3, generator=g) * 2 - 1) * 0.9
    directions = torch.nn.functional.normalize(targets - origins, dim=-1)
    return origins, directions, torch.arange(batch).repeat_interleave(per_latent)


@pytest.mark.parametrize("training", [False, True])
def test_renderer_matches_nerfstudio_reference_images_and_gradients(tiny_model, training):
    gen = tiny_model.generator.train(training)
    torch.manual_seed(1)
    planes = (torch.randn(3, 3, gen.backbone.plane_channels, 32, 32) * 2).requires_grad_(True)
    origins, directions, index = _rays(3, 200, seed=2)

    torch.manual_seed(5)  # training draws jitter: both paths must draw the same numbers in the same order
    new = gen.render_batched(planes, origins.view(3, 200, 3), directions.view(3, 200, 3))
    new = {k: v.reshape(600, -1) for k, v in new.items() if k != "weighted_distance"}  # nerfstudio has no such output
    loss_new = sum((v * torch.linspace(0.5, 1.5, v.shape[-1])).sum() for v in new.values())
    grads_new = torch.autograd.grad(loss_new, [planes] + list(gen.field.parameters()))

    torch.manual_seed(5)
    ref = reference_render(gen, planes, origins, directions, index)
    loss_ref = sum((v * torch.linspace(0.5, 1.5, v.shape[-1])).sum() for v in ref.values())
    grads_ref = torch.autograd.grad(loss_ref, [planes] + list(gen.field.parameters()))

    for key in ("rgb", "features", "depth", "accumulation"):
        torch.testing.assert_close(new[key], ref[key], atol=2e-5, rtol=1e-4, msg=key)
    assert new["accumulation"].std() > 0.05  # a non-trivial scene: some rays opaque, some not
    for got, want in zip(grads_new, grads_ref):
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-3)
        assert want.abs().sum() > 0


def test_render_rays_with_latent_index_matches_per_latent_renders(tiny_model):
    gen = tiny_model.generator.eval()
    planes = torch.randn(2, 3, gen.backbone.plane_channels, 32, 32)
    origins, directions, index = _rays(2, 50, seed=4)
    order = torch.randperm(100, generator=torch.Generator().manual_seed(0))  # latents interleaved
    rays = RayBundle(origins=origins[order], directions=directions[order], pixel_area=torch.ones(100, 1))
    rays.metadata["latent_index"] = index[order, None]
    mixed = gen.render_rays(planes, rays)
    for b in range(2):
        one = gen.render_batched(planes[b : b + 1], origins[index == b][None], directions[index == b][None])
        ids = order[index[order] == b]  # original ray ids of latent b, in the mixed bundle's order
        torch.testing.assert_close(mixed["rgb"][index[order] == b], one["rgb"][0][ids - 50 * b])


def test_preview_renders_decode_the_rgb_channels_only(tiny_model):
    """render_rays (viewer, video) asks the field for the RGB features only; colours, depth and opacity equal
    those of the full render, and the field's restricted output equals the full one's first channels."""
    gen = tiny_model.generator.eval()
    planes = torch.randn(1, 3, gen.backbone.plane_channels, 32, 32) * 2
    origins, directions, _ = _rays(1, 300, seed=6)
    rays = RayBundle(origins=origins, directions=directions, pixel_area=torch.ones(300, 1))
    with torch.no_grad():
        full = gen.render_batched(planes, origins[None], directions[None])
        preview = gen.render_rays(planes, rays)
        density, features = gen.field.batched(planes, origins[None] * 0.3)
        density3, features3 = gen.field.batched(planes, origins[None] * 0.3, channels=3)
    assert full["features"].shape[-1] == gen.field.config.feature_dim > 3
    assert preview["features"].shape[-1] == 3 and features3.shape[-1] == 3
    for key in ("rgb", "depth", "accumulation"):
        torch.testing.assert_close(preview[key], full[key][0])
    torch.testing.assert_close(preview["features"], full["features"][0, :, :3])
    torch.testing.assert_close(density3, density)
    torch.testing.assert_close(features3, features[..., :3])


@pytest.mark.parametrize("chunk", [7, 4096])
def test_chunked_decoder_matches_plain_autograd(chunk):
    torch.manual_seed(0)
    decoder = Decoder(5, 16, 3, 9, chunk=chunk)
    x = torch.randn(1000, 5, requires_grad=True)
    out = decoder(x)
    h = x
    for i, layer in enumerate(decoder.layers):
        h = F.linear(h, layer.weight / 5**0.5 if i == 0 else layer.weight / 16**0.5, layer.bias)
        if i < len(decoder.layers) - 1:
            h = F.softplus(h)
    torch.testing.assert_close(out, h)
    g = torch.randn_like(out)
    got = torch.autograd.grad(out, [x] + list(decoder.parameters()), g)
    want = torch.autograd.grad(h, [x] + list(decoder.parameters()), g)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    # density alone: the output layer restricted to its first row
    torch.testing.assert_close(decoder(x, outputs=slice(0, 1)), h[:, :1])


def test_decoders_softplus_matches_torchs_everywhere_including_extremes():
    from triplane_gan_ns.fields.decoder import _softplus

    z = torch.cat([torch.randn(10_000) * 30, torch.tensor([0.0, -17.0, 17.0, -20.0, 20.0, -88.0, 88.0, 89.0, -1e30, 1e30])])
    got = _softplus(z.clone())
    assert torch.isfinite(got).all()
    want = F.softplus(z.double())
    torch.testing.assert_close(got.double(), want, atol=1e-6, rtol=2e-7)


def test_decoder_layers_have_equalised_learning_rate():
    field = TriplaneFieldConfig(hidden_dim=64, num_hidden_layers=3).setup(plane_channels=32)
    for layer in field.decoder.layers:
        fan_in = layer.weight.shape[1]
        assert layer.scale == pytest.approx(fan_in**-0.5)
        assert 0.9 < layer.weight.std().item() < 1.1  # stored at unit scale; Adam's steps are relative to it
        assert torch.all(layer.bias == 0)


# ---- empty-space skipping for a fixed latent ---------------------------------------------------------------
from triplane_gan_ns import renderer  # noqa: E402
from triplane_gan_ns.occupancy import THRESHOLD, OccupancyGrid, cell_centres  # noqa: E402


def _sphere_field(radius: float = 0.45, sigma: float = 40.0):
    """A sharp-edged sphere (soft over a thin shell) with a colour that varies over the surface."""

    def density(points):
        d = points.norm(dim=-1, keepdim=True)
        return sigma * torch.sigmoid((radius - d) * 60.0)

    def field(points):
        colour = torch.sigmoid(points * 3.0)
        return density(points), torch.cat([colour, colour[..., :1] * 0.5], dim=-1)

    return field, density


def test_occupancy_grid_never_drops_density_above_the_threshold():
    _, density = _sphere_field()
    grid = OccupancyGrid.from_density(lambda p: density(p)[..., 0], bound=1.0, resolution=32)
    assert 0.02 < grid.fraction() < 0.3  # the sphere and a shell of dilation, not the whole box
    dense = cell_centres(160, 1.0).reshape(-1, 3)  # 5 reference points per cell and axis
    above = density(dense)[..., 0] > THRESHOLD
    assert above.sum() > 1000
    assert bool(grid.lookup(dense)[above].all())
    # and the empty part really is empty: beyond where the density falls under a tenth of the threshold
    # (40 e^{60 (0.45 - d)} = THRESHOLD / 10) plus two cell diagonals, nothing is occupied
    reach = 0.45 + math.log(40 * 10 / THRESHOLD) / 60 + 2 * (2 / 32) * 3**0.5
    assert reach < 0.9
    assert not bool(grid.lookup(dense)[dense.norm(dim=-1) > reach].any())


def test_occupancy_grid_is_built_where_the_planes_are(tiny_model, monkeypatch):
    """A latent's grid evaluates its density at cell centres on the planes' device and stays there (on a GPU,
    points made on the CPU would not meet the planes); ``meta`` stands in for another device."""
    gen = tiny_model.generator_ema
    seen = []

    def density(planes, points, raw=False):
        seen.append((planes.device.type, points.device.type))
        return torch.ones(*points.shape[:-1], 1, device=points.device)

    monkeypatch.setattr(gen.field, "batched_density", density)
    planes = torch.zeros(1, 3, 8, 32, 32, device="meta")
    grid = gen.occupancy_grid(planes, resolution=8)
    assert seen and set(seen) == {("meta", "meta")}
    assert grid.occupied.device.type == "meta" and grid.occupied.shape == (8, 8, 8)


def test_skipping_matches_full_sampling_on_an_analytic_sphere():
    field, density = _sphere_field()
    grid = OccupancyGrid.from_density(lambda p: density(p)[..., 0], bound=1.0, resolution=32)
    origins, directions, _ = _rays(1, 2000, seed=3)
    kwargs = dict(bound=1.0, num_coarse=24, num_importance=24, background="white")
    with torch.no_grad():
        full = renderer.render(field, lambda p: density(p), origins[None], directions[None], **kwargs)
        calls = []
        counted = lambda p: (calls.append(p.shape[1]), field(p))[1]  # noqa: E731
        fast = renderer.render(counted, lambda p: density(p), origins[None], directions[None], occupancy=grid, **kwargs)
    assert (full["accumulation"] > 0.99).float().mean() > 0.1  # some rays hit the sphere
    assert (fast["rgb"] - full["rgb"]).abs().mean() < 1 / 255
    assert (fast["rgb"] - full["rgb"]).abs().max() < 4 / 255
    torch.testing.assert_close(fast["accumulation"], full["accumulation"], atol=5e-3, rtol=0)
    assert sum(calls) < 0.4 * 2000 * 49  # most samples were skipped


def test_coarse_pass_stops_each_ray_where_its_transmittance_is_spent():
    """Skipping, the coarse pass evaluates the density front to back and leaves out exactly the samples in
    empty cells and those of segments that start behind an optical depth of ``MAX_OPTICAL_DEPTH``; the
    samples it evaluates carry the field's density, the others the grid's interpolated estimate."""
    _, density = _sphere_field(sigma=200.0)
    grid = OccupancyGrid.from_density(lambda p: density(p)[..., 0], bound=1.0, resolution=32)
    origins, directions, _ = _rays(1, 1500, seed=4)
    rays = renderer.Rays(origins[None], directions[None], 1.0)
    n = 48
    points, deltas = rays.midpoints(rays.distances(renderer.uniform_bins(1500, n, False, "cpu").view(1, 1500, n + 1)))
    calls = []
    counted = lambda p: (calls.append(p.shape[1]), density(p))[1]  # noqa: E731
    fast = renderer._coarse_front_to_back(counted, points, grid, deltas)
    full = density(points).view(1, 1500, n)
    estimate = grid.estimate(points).view(1, 1500, n)
    assert not torch.allclose(estimate, full, atol=1e-3)  # the two differ: the checks below mean something
    # optical depth at the start of each sample's segment, of the densities the pass itself composited
    optical = torch.cumsum(fast * deltas, dim=-1)
    before = torch.cat([torch.zeros(1, 1500, 1), optical[..., :-1]], dim=-1)
    segment_start = before[..., :: renderer.COARSE_SEGMENT].repeat_interleave(renderer.COARSE_SEGMENT, dim=-1)[..., :n]
    occupied = grid.lookup(points).view(1, 1500, n)
    expected = occupied & (segment_start < renderer.MAX_OPTICAL_DEPTH)
    torch.testing.assert_close(fast[expected], full[expected], rtol=1e-6, atol=1e-6)  # the field's values
    torch.testing.assert_close(fast[~expected], estimate[~expected], rtol=0, atol=1e-6)  # the grid's estimate
    assert sum(calls) == int(expected.sum())  # each expected sample evaluated once, nothing else
    assert sum(calls) < 0.8 * int(occupied.sum())  # rays through the sphere stopped early
    assert (optical[..., -1] > renderer.MAX_OPTICAL_DEPTH).float().mean() > 0.1


def test_skipped_coarse_samples_keep_the_importance_samples_of_full_sampling():
    """At the tiny preset's 4 + 8 samples per ray, skipped coarse samples read the grid's estimate of the faint
    haze around an object, so the importance samples land as with full sampling and the silhouettes match it;
    reading zero there instead moves them by several levels of 255."""

    def density(points):
        d = points.norm(dim=-1, keepdim=True)
        return 40.0 * torch.sigmoid((0.45 - d) * 60.0) + 0.004 * torch.exp(-(((d - 0.65) / 0.15) ** 2))

    def field(points):
        return density(points), torch.sigmoid(points * 3.0)

    grid = OccupancyGrid.from_density(lambda p: density(p)[..., 0], bound=1.0, resolution=64)
    assert 0.05 < grid.fraction() < 0.3  # the haze itself is skipped
    origins, directions, _ = _rays(1, 4000, seed=5)
    kwargs = dict(bound=1.0, num_coarse=4, num_importance=8, background="white")
    with torch.no_grad():
        full = renderer.render(field, density, origins[None], directions[None], **kwargs)
        fast = renderer.render(field, density, origins[None], directions[None], occupancy=grid, **kwargs)
        zeroed = renderer.render(
            field, density, origins[None], directions[None], occupancy=OccupancyGrid(grid.occupied, 1.0), **kwargs
        )
    assert (fast["rgb"] - full["rgb"]).abs().max() < 2 / 255
    assert (zeroed["rgb"] - full["rgb"]).abs().max() > 4 / 255


def test_occupancy_estimate_interpolates_the_density_between_cell_centres():
    """The grid's estimate is exact at cell centres and linear in between (a linear density is reproduced
    everywhere between the outer centres)."""
    linear = lambda p: 0.3 + 0.2 * p[..., 0] - 0.1 * p[..., 1] + 0.05 * p[..., 2]  # noqa: E731
    grid = OccupancyGrid.from_density(linear, bound=1.0, resolution=16)
    inner = (torch.rand(5000, 3, generator=torch.Generator().manual_seed(0)) * 2 - 1) * (1 - 1 / 16)
    torch.testing.assert_close(grid.estimate(inner), linear(inner), atol=1e-5, rtol=0)
    centres = cell_centres(16, 1.0).reshape(-1, 3)
    torch.testing.assert_close(grid.estimate(centres), linear(centres), atol=1e-5, rtol=0)
    assert OccupancyGrid(grid.occupied, 1.0).estimate(inner).abs().max() == 0  # a grid without densities


def test_viewer_frame_with_skipping_matches_full_sampling_on_a_generated_latent(tiny_model):
    """A generated latent made sparse (its density row sharpened and lowered so that blobs stand in empty
    space, as after training), rendered by the viewer path with its cached occupancy grid and by full sampling."""
    model = tiny_model.eval()
    with torch.no_grad():
        last = model.generator_ema.field.decoder.layers[-1]
        last.weight[0] *= 60.0
        last.bias[0] = last.bias[0] * 60.0 - 18.0
    _, planes, grid = model._preview_planes()
    assert 0.05 < grid.fraction() < 0.95
    dense = cell_centres(96, 1.0).reshape(-1, 3)
    above = model.generator_ema.field.query(planes, dense)[0][..., 0] > THRESHOLD
    assert bool(grid.lookup(dense)[above].all())
    camera = model.orbit_cameras(1)
    camera.width[:] = 64
    camera.height[:] = 64
    camera.cx[:] = 32.0
    camera.cy[:] = 32.0
    camera.fx *= 2
    camera.fy *= 2
    fast = model.get_outputs_for_camera(camera)
    model._preview_cache = (model._preview_cache[0], *model._preview_cache[1:3], None)  # same planes, no skipping
    full = model.get_outputs_for_camera(camera)
    assert (full["accumulation"] > 0.5).float().mean() > 0.05
    assert (fast["rgb"] - full["rgb"]).abs().mean() < 1 / 255
    torch.testing.assert_close(fast["accumulation"], full["accumulation"], atol=1e-2, rtol=0)


def test_previews_and_raw_render_skip_empty_space_and_match_full_sampling(tiny_model, monkeypatch):
    """The training previews (sample grid, orbit) and ``triplane-gan render``'s raw views evaluate the field only
    in the latent's occupied cells, and their pixels stay within 1/255 on average of full sampling."""
    from triplane_gan_ns.export.video import render_view

    model = tiny_model.eval()
    gen = model.generator_ema
    with torch.no_grad():  # sparse, as after training (see the viewer test above)
        last = gen.field.decoder.layers[-1]
        last.weight[0] *= 60.0
        last.bias[0] = last.bias[0] * 60.0 - 18.0
    cameras = model.orbit_cameras(2, resolution=48)
    skipped = []
    real_where_needed = renderer._where_needed
    monkeypatch.setattr(renderer, "_where_needed", lambda *a: (skipped.append(1), real_where_needed(*a))[1])
    previews = model._preview_views(1, 3, cameras)
    assert skipped, "the previews evaluated every sample"
    z, label = model.seeded_latents([3]), torch.tensor([1])
    ws = gen.mapping(z, label, model.config.preview_truncation)
    planes = gen.planes(ws, noise_mode="const")
    assert 0.05 < gen.occupancy_grid(planes).fraction() < 0.95
    full = torch.stack(
        [gen.render_camera(planes, cameras[i : i + 1], 1000)["rgb"].permute(2, 0, 1) for i in range(2)]
    ).clamp(0, 1)
    assert (full < 0.9).float().mean() > 0.02  # the object covers part of the views
    assert (previews - full).abs().mean() < 1 / 255
    skipped.clear()
    raw = render_view(model, ws, planes, cameras[1:2], raw=True, rays_per_chunk=1000)
    assert skipped, "the raw render evaluated every sample"
    assert (raw["image"] - full[1]).abs().mean() < 1 / 255


def test_skipping_is_refused_for_rays_of_several_latents(tiny_model):
    """An occupancy grid describes one latent: rays tagged with latent indices cannot use it (they used to render
    without skipping, silently)."""
    gen = tiny_model.generator_ema
    planes = gen.planes(gen.mapping(torch.randn(1, gen.backbone.z_dim), torch.tensor([0])))
    rays = gen.camera_rays(tiny_model.orbit_cameras(1, resolution=8), torch.zeros(1, dtype=torch.long))
    with torch.no_grad(), pytest.raises(ValueError, match="one triplane"):
        gen.render_rays(planes, rays, gen.occupancy_grid(planes))


def test_raw_density_is_the_decoder_output_before_activation_and_box():
    field = TriplaneFieldConfig(hidden_dim=16, num_hidden_layers=2, feature_dim=4).setup(plane_channels=4)
    planes = torch.randn(2, 3, 4, 8, 8)
    points = torch.rand(2, 50, 3) * 2.4 - 1.2  # some outside the box
    raw = field.batched_density(planes, points, raw=True)
    density = field.batched_density(planes, points)
    inside = (points.abs() <= 1).all(dim=-1, keepdim=True)
    torch.testing.assert_close(density, F.softplus(raw + field.config.density_shift) * inside)
    assert (~inside).any() and (raw[~inside[..., 0]] != 0).all()  # the regulariser sees it outside the box too
    assert not torch.allclose(raw * inside, density, atol=1e-3)  # a different quantity, not the density again


def test_density_transform_zeroes_each_latents_lower_half_in_both_passes():
    """``zero_below_quantile(0.5)`` inside the renderer: in each pass and for each latent separately, exactly the
    samples below that latent's median density become 0 (half of them, up to ties) and the others keep their
    value; what the transform returns is what gets composited."""
    field, density = _sphere_field(radius=0.6, sigma=8.0)
    scale = torch.tensor([1.0, 3.0]).view(2, 1, 1)  # the second latent is denser: its own median counts
    haze = lambda p: density(p) * scale + 0.2  # noqa: E731  (a haze that the transform removes)
    scaled = lambda p: (haze(p), field(p)[1])  # noqa: E731
    origins, directions, _ = _rays(2, 300, seed=4)
    origins, directions = origins.view(2, 300, 3), directions.view(2, 300, 3)
    zero_half = renderer.zero_below_quantile(0.5)
    seen = []

    def recording(values):
        out = zero_half(values)
        seen.append((values, out))
        return out

    kwargs = dict(bound=1.0, num_coarse=16, num_importance=16, background="white")
    with torch.no_grad():
        plain = renderer.render(scaled, haze, origins, directions, **kwargs)
        halved = renderer.render(scaled, haze, origins, directions, density_transform=recording, **kwargs)
        nothing = renderer.render(scaled, haze, origins, directions, density_transform=torch.zeros_like, **kwargs)
    assert [v.shape for v, _ in seen] == [(2, 300, 16), (2, 300, 33)]  # coarse pass, then the rendered samples
    for values, out in seen:
        for b in range(2):
            v, o = values[b].reshape(-1), out[b].reshape(-1)
            assert bool((v > 0).all())
            median = torch.quantile(v, 0.5)
            assert bool((o[v < median] == 0).all()) and torch.equal(o[v >= median], v[v >= median])
            assert abs(int((o != 0).sum()) / v.numel() - 0.5) < 0.02, int((o != 0).sum())
    assert bool((halved["accumulation"] <= plain["accumulation"] + 1e-6).all())
    assert float((plain["accumulation"] - halved["accumulation"]).max()) > 0.2
    assert bool((nothing["accumulation"] == 0).all()) and bool((nothing["rgb"] == 1).all())
    assert bool((nothing["weighted_distance"] == 0).all())
    # the weighted distance is the expected depth times the opacity (depth divides it by the opacity)
    torch.testing.assert_close(plain["weighted_distance"], plain["depth"] * (plain["accumulation"] + 1e-10))
