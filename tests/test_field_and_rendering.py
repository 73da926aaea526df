"""Triplane sampling and volume rendering against analytic results."""

from __future__ import annotations

import math

import pytest
import torch
from nerfstudio.cameras.rays import RayBundle

from triplane_gan_ns.fields.triplane import PLANE_AXES, TriplaneFieldConfig


def _pixel_centre(index: int, res: int) -> float:
    """Normalised coordinate of a pixel centre (align_corners=False)."""
    return (2 * index + 1) / res - 1


def test_plane_feature_is_read_back_at_its_point_and_latent():
    res, channels, batch = 16, 4, 3
    field = TriplaneFieldConfig(hidden_dim=8, num_hidden_layers=2, feature_dim=4).setup(
        plane_channels=channels, scene_bound=2.0
    )
    planes = torch.zeros(batch, 3, channels, res, res)
    i, j, k = 3, 11, 6  # pixel indices along x, y, z
    point = torch.tensor([_pixel_centre(i, res), _pixel_centre(j, res), _pixel_centre(k, res)]) * 2.0
    values = torch.arange(1.0, 1.0 + 3 * channels).view(3, channels)
    for p, (a, b) in enumerate(PLANE_AXES):
        idx = (i, j, k)
        planes[1, p, :, idx[b], idx[a]] = values[p]  # row = v axis, column = u axis
    got = field.sample_planes(planes, point.expand(batch, 1, 3))[..., 0]  # [batch, 3 planes, channels]
    torch.testing.assert_close(got[1], values)
    assert got[0].abs().max() == 0 and got[2].abs().max() == 0
    # half a pixel away along x: XY and XZ planes are read at half weight, YZ is unaffected
    shifted = point + torch.tensor([1.0 / res * 2.0, 0, 0])
    got = field.sample_planes(planes[1:2], shifted.view(1, 1, 3))[0, :, :, 0]
    torch.testing.assert_close(got, values * torch.tensor([[0.5], [0.5], [1.0]]))


def test_batch_of_triplanes_in_one_call_matches_one_at_a_time():
    torch.manual_seed(0)
    field = TriplaneFieldConfig(hidden_dim=16, num_hidden_layers=3, feature_dim=6).setup(plane_channels=5)
    planes = torch.randn(4, 3, 5, 8, 8)
    points = torch.rand(100, 3) * 2 - 1
    latent = torch.randint(0, 4, (100,))
    density, features = field.query(planes, points, latent)
    for b in range(4):
        m = latent == b
        d_b, f_b = field.query(planes[b : b + 1], points[m])
        torch.testing.assert_close(density[m], d_b)
        torch.testing.assert_close(features[m], f_b)
    assert features.shape == (100, 6) and density.shape == (100, 1)
    assert (density >= 0).all()


def test_fixed_planes_are_the_planes_laid_out_channels_last_and_read_the_same(tiny_model):
    """A fixed latent's planes (viewer, previews, export) hold the backbone's values, stored channels-last on
    the CPU; the field reads the same densities and features from either layout."""
    from triplane_gan_ns.fields.triplane import lookup_layout

    gen = tiny_model.generator_ema
    ws = gen.mapping(torch.randn(2, gen.backbone.z_dim), torch.tensor([0, 1]))
    with torch.no_grad():
        plain = gen.planes(ws, noise_mode="const")
    fixed = gen.fixed_planes(ws)
    b, three, c, r, _ = fixed.shape
    assert not fixed.requires_grad
    assert fixed.reshape(b * three, c, r, r).is_contiguous(memory_format=torch.channels_last)
    assert not plain.reshape(b * three, c, r, r).is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(fixed, plain, rtol=0, atol=0)
    torch.manual_seed(0)
    field = TriplaneFieldConfig(hidden_dim=16, num_hidden_layers=3, feature_dim=6).setup(plane_channels=32)
    planes = torch.randn(1, 3, 32, 64, 64)
    points = torch.rand(1, 5000, 3) * 2.2 - 1.1
    with torch.no_grad():
        for got, want in zip(field.batched(lookup_layout(planes), points), field.batched(planes, points)):
            torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)


def test_decoder_reads_a_transposed_input_as_it_lies(monkeypatch):
    """One latent's plane features arrive as a transposed [points, channels] view; the decoder uses it without
    a copy and gives the outputs and gradients of a contiguous copy."""
    from triplane_gan_ns.fields import decoder as decoder_module

    torch.manual_seed(0)
    decoder = decoder_module.Decoder(32, 64, 3, 5)
    base = torch.randn(1, 32, 9000)
    lying = base.clone().requires_grad_(True)
    copied = base.clone().requires_grad_(True)
    inputs = []
    apply = decoder_module._ChunkedMLP.apply
    monkeypatch.setattr(decoder_module._ChunkedMLP, "apply", lambda x, *a: (inputs.append(x.data_ptr()), apply(x, *a))[1])
    out = decoder(lying.transpose(1, 2))
    assert inputs == [lying.data_ptr()]  # the matrix products read the input where it lies
    ref = decoder(copied.transpose(1, 2).contiguous())
    torch.testing.assert_close(out, ref, rtol=1e-6, atol=1e-6)
    g = torch.randn_like(out)
    got = torch.autograd.grad(out, [lying, *decoder.parameters()], g)
    want = torch.autograd.grad(ref, [copied, *decoder.parameters()], g)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_decoder_is_deeper_than_eg3d_and_configurable():
    field = TriplaneFieldConfig(hidden_dim=64, num_hidden_layers=3).setup(plane_channels=32)
    assert len(field.decoder.layers) == 4  # EG3D: 2 (one hidden layer)
    assert [layer.weight.shape[0] for layer in field.decoder.layers] == [64, 64, 64, 33]
    shallow = TriplaneFieldConfig(num_hidden_layers=1).setup(plane_channels=32)
    assert len(shallow.decoder.layers) == 2


def _constant_density_generator(tiny_model, sigma: float):
    gen = tiny_model.generator
    last = gen.field.decoder.layers[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.zero_()
        # softplus(b + shift) = sigma
        last.bias[0] = math.log(math.expm1(sigma)) - gen.field.config.density_shift
    return gen


@pytest.mark.parametrize("sigma", [0.3, 1.5])
def test_constant_density_box_gives_analytic_opacity_and_depth(tiny_model, sigma):
    gen = _constant_density_generator(tiny_model, sigma)
    planes = torch.zeros(1, 3, gen.backbone.plane_channels, 8, 8)
    bound = gen.config.scene_bound
    origins = torch.tensor([[3.0, 0.0, 0.0], [3.0, 3.0, 0.3], [0.2, -0.4, 5.0], [3.0, 3.0, 3.0]])
    targets = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 0.3], [0.2, -0.4, 0.0], [2.0, 0.0, 0.0]])
    directions = torch.nn.functional.normalize(targets - origins, dim=-1)
    rays = RayBundle(origins=origins, directions=directions, pixel_area=torch.ones(4, 1))
    out = gen.render_rays(planes, rays)
    # analytic chord of the box [-b, b]^3 along each ray (slab method)
    inv = 1.0 / torch.where(directions.abs() < 1e-9, torch.full_like(directions, 1e-9), directions)
    t0 = (-bound - origins) * inv
    t1 = (bound - origins) * inv
    t_near = torch.minimum(t0, t1).max(dim=-1).values.clamp(min=0)
    t_far = torch.maximum(t0, t1).min(dim=-1).values
    length = (t_far - t_near).clamp(min=0)
    opacity = 1 - torch.exp(-sigma * length)
    torch.testing.assert_close(out["accumulation"][:, 0], opacity, atol=2e-3, rtol=0)
    hit = length > 0
    assert not hit[3] and out["accumulation"][3, 0] < 1e-4
    # expected depth of an exponential distribution truncated to the chord
    L = length[hit]
    e = torch.exp(-sigma * L)
    depth = t_near[hit] + 1 / sigma - L * e / (1 - e)
    torch.testing.assert_close(out["depth"][hit, 0], depth, atol=0.02 * L.max().item(), rtol=0)


def test_same_latent_same_camera_renders_identical_pixels(tiny_model):
    z = tiny_model.seeded_latents([7])
    label = torch.tensor([2])
    cameras = tiny_model.orbit_cameras(2)
    a = tiny_model.generate(z, label, cameras=cameras, noise_mode="const")["image"]
    b = tiny_model.generate(z, label, cameras=cameras, noise_mode="const")["image"]
    assert torch.equal(a, b)
    assert a.shape == (2, 3, 32, 32) and a.dtype == torch.float32


def test_generate_shapes_and_gradients_reach_every_parameter(tiny_model):
    tiny_model.train()
    z = torch.randn(2, tiny_model.generator.backbone.z_dim)
    labels = torch.tensor([0, 3])
    out = tiny_model.generate(z, labels, views_per_latent=3)
    assert out["image"].shape == (6, 3, 32, 32)
    assert out["depth"].shape == (6, 1, 32, 32) and out["accumulation"].shape == (6, 1, 32, 32)
    assert out["planes"].shape == (2, 3, 8, 32, 32)
    logits = tiny_model.discriminator(out["image"] * 2 - 1, labels.repeat_interleave(3))
    assert logits.shape == (6,)
    logits.sum().backward()
    for name, p in list(tiny_model.generator.named_parameters()) + list(tiny_model.discriminator.named_parameters()):
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_views_of_one_latent_share_its_triplane(tiny_model):
    """Camera k of a multi-view render shows latent k // views: rendering each latent alone agrees."""
    z = torch.randn(2, tiny_model.generator.backbone.z_dim)
    labels = torch.tensor([1, 2])
    cameras = tiny_model.pose_sampler.sample(4, 32, generator=torch.Generator().manual_seed(3))
    both = tiny_model.generate(z, labels, cameras=cameras, noise_mode="const")["image"]
    first = tiny_model.generate(z[:1], labels[:1], cameras=cameras[0:2], noise_mode="const")["image"]
    second = tiny_model.generate(z[1:], labels[1:], cameras=cameras[2:4], noise_mode="const")["image"]
    torch.testing.assert_close(both, torch.cat([first, second]), atol=1e-5, rtol=1e-5)
