"""Tests of the StyleGAN2 triplane backbone and its building blocks (tiny configs, CPU)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from triplane_gan_ns.backbones.base import BackboneConfig
from triplane_gan_ns.layers import (
    EqualLinear,
    ModulatedConv2d,
    downsample2d,
    fir_filter2d,
    make_fir_filter,
    normalize_2nd_moment,
    upsample2d,
)
from triplane_gan_ns.backbones.stylegan2 import (
    StyleGAN2Backbone,
    StyleGAN2BackboneConfig,
    StyleGAN2EG3DBackboneConfig,
    SynthesisBlock,
    merge_w_averages,
)

NUM_CLASSES = 5
TINY = dict(
    z_dim=32, w_dim=32, plane_channels=4, plane_resolution=16, channel_base=256, channel_max=32, mapping_layers=2
)


def make(num_classes: int = NUM_CLASSES, config_cls=StyleGAN2BackboneConfig, **overrides) -> StyleGAN2Backbone:
    torch.manual_seed(0)
    return config_cls(**{**TINY, **overrides}).setup(num_classes=num_classes)


def inputs(batch: int = 3, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(batch, TINY["z_dim"], generator=g)
    labels = torch.randint(0, NUM_CLASSES, (batch,), generator=g)
    return z, labels


def test_configs() -> None:
    assert issubclass(StyleGAN2BackboneConfig, BackboneConfig)
    assert StyleGAN2BackboneConfig().extra_blocks is True
    assert StyleGAN2EG3DBackboneConfig().extra_blocks is False
    assert StyleGAN2EG3DBackboneConfig()._target is StyleGAN2Backbone
    assert isinstance(make(config_cls=StyleGAN2EG3DBackboneConfig), StyleGAN2Backbone)


def test_shapes_and_dtypes() -> None:
    net = make()
    z, labels = inputs()
    ws = net.mapping(z, labels)
    assert ws.shape == (3, net.num_ws, 32) and ws.dtype == torch.float32
    planes = net.synthesis(ws)
    assert planes.shape == (3, 3, 4, 16, 16) and planes.dtype == torch.float32
    assert torch.isfinite(planes).all()
    assert net(z, labels).shape == (3, 3, 4, 16, 16)
    assert net.w_average(labels).shape == (3, net.num_ws, 32)
    with pytest.raises(ValueError):
        net.synthesis(ws[:, :-1])


def test_num_ws_convention() -> None:
    # Every conv takes one w and the last ToRGB one more: 1 conv at 4x4, 2 per further block.
    for extra in (False, True):
        net = make(extra_blocks=extra)
        assert net.num_ws == 1 + 2 * (net.num_synthesis_blocks - 1) + 1


def test_every_w_is_used() -> None:
    net = make()
    ws = net.mapping(*inputs()).detach().requires_grad_(True)
    planes = net.synthesis(ws, noise_mode="const")
    (planes * torch.randn_like(planes)).sum().backward()
    used = ws.grad.abs().sum(dim=(0, 2)) > 0
    assert used.all(), f"ws not used by synthesis: {torch.nonzero(~used).flatten().tolist()}"


def assert_every_parameter_has_gradient(module: torch.nn.Module) -> None:
    for name, p in module.named_parameters():
        if not p.requires_grad:
            continue
        assert p.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{name} has a non-finite gradient"
        assert p.grad.abs().sum() > 0, f"{name} has an all-zero gradient"


def test_gradients_reach_every_parameter() -> None:
    net = make()
    z, labels = inputs()
    planes = net(z, labels, noise_mode="random")
    (planes * torch.randn_like(planes)).sum().backward()
    assert_every_parameter_has_gradient(net)
    assert net.mapping_network.embed is not None and net.mapping_network.embed.weight.grad is not None


def test_unconditional_ignores_labels() -> None:
    net = make(num_classes=0)
    assert net.w_avg.shape == (1, 32)
    assert net.mapping_network.embed is None
    z, _ = inputs()
    assert torch.equal(net.mapping(z, torch.tensor([0, 3, 7])), net.mapping(z, torch.tensor([1, 1, 1])))
    assert net(z, torch.zeros(3, dtype=torch.long), noise_mode="const").shape == (3, 3, 4, 16, 16)


def set_random_w_avg(net: StyleGAN2Backbone) -> torch.Tensor:
    with torch.no_grad():
        net.w_avg.copy_(torch.randn_like(net.w_avg))
    return net.w_avg.clone()


def test_truncation_psi_zero_returns_class_average() -> None:
    net = make()
    w_avg = set_random_w_avg(net)
    z, _ = inputs(4)
    labels = torch.tensor([0, 2, 2, 4])
    ws = net.mapping(z, labels, truncation_psi=0.0)
    assert torch.equal(ws, w_avg[labels][:, None].expand(-1, net.num_ws, -1))
    assert torch.equal(ws, net.w_average(labels))


def test_truncation_psi_one_is_identity_and_cutoff_limits_layers() -> None:
    net = make()
    set_random_w_avg(net)
    z, labels = inputs()
    ws = net.mapping(z, labels)
    assert torch.equal(net.mapping(z, labels, truncation_psi=1.0), ws)
    half = net.mapping(z, labels, truncation_psi=0.5)
    assert not torch.allclose(half, ws)
    cut = net.mapping(z, labels, truncation_psi=0.0, truncation_cutoff=2)
    assert torch.equal(cut[:, :2], net.w_average(labels)[:, :2])
    assert torch.equal(cut[:, 2:], ws[:, 2:])


def test_update_w_avg_moves_only_present_classes() -> None:
    net = make()
    before = set_random_w_avg(net)
    with torch.no_grad():
        net.w_avg_count.fill_(3.0)  # every class seen 3 times before
    z, _ = inputs(3)
    labels = torch.tensor([1, 1, 3])
    net.mapping(z, labels)
    assert torch.equal(net.w_avg, before), "w_avg must not change unless update_w_avg=True"

    w = net.mapping_network(z, labels).detach()
    net.mapping(z, labels, update_w_avg=True)
    beta = net.w_avg_beta
    step = (1 - beta) / (1 - beta**4)  # the 4th update of a bias-corrected average
    for c in (0, 2, 4):
        assert torch.equal(net.w_avg[c], before[c])
    torch.testing.assert_close(net.w_avg[1], before[1] + step * (w[:2].mean(0) - before[1]))
    torch.testing.assert_close(net.w_avg[3], before[3] + step * (w[2] - before[3]))
    assert net.w_avg_count.tolist() == [3.0, 4.0, 3.0, 4.0, 3.0]


def test_w_avg_of_a_constant_w_is_that_w_from_the_first_update() -> None:
    """Not (1 - beta^n) c, as a zero-started moving average would give."""
    net = make()
    c = torch.randn(NUM_CLASSES, TINY["w_dim"], generator=torch.Generator().manual_seed(3))
    for n in range(1, 40):
        labels = torch.tensor([n % NUM_CLASSES, (n * 2) % NUM_CLASSES])
        net._update_w_avg(c[labels], labels)
        seen = net.w_avg_count > 0
        assert torch.equal(net.w_avg[seen], c[seen]), n
        assert torch.equal(net.w_avg[~seen], torch.zeros_like(net.w_avg[~seen]))


def test_w_avg_is_the_normalised_exponentially_weighted_mean_of_batch_means() -> None:
    net = make(w_avg_beta=0.9)  # a short memory, so that the weights differ a lot across 60 updates
    gen = torch.Generator().manual_seed(4)
    means = {c: [] for c in range(NUM_CLASSES)}  # batch means of each class, in order, float64
    for _ in range(60):
        labels = torch.randint(0, NUM_CLASSES - 1, (6,), generator=gen)  # the last class is never seen
        w = torch.randn(6, TINY["w_dim"], generator=gen) * 3 + 1
        net._update_w_avg(w, labels)
        for c in labels.unique().tolist():
            means[c].append(w[labels == c].double().mean(0))
    for c, seen in means.items():
        n = len(seen)
        assert float(net.w_avg_count[c]) == n
        if n == 0:
            assert torch.equal(net.w_avg[c], torch.zeros(TINY["w_dim"]))
            continue
        weights = torch.tensor([0.9 ** (n - 1 - k) for k in range(n)], dtype=torch.float64)
        expected = (weights[:, None] * torch.stack(seen)).sum(0) / weights.sum()
        torch.testing.assert_close(net.w_avg[c].double(), expected, rtol=1e-5, atol=1e-5)


def test_merging_the_averages_of_processes_weighs_them_by_what_each_has_seen() -> None:
    """Two processes update their own averages on their own labels; the merge equals the normalised
    exponentially weighted mean over both processes' batch means (each process's weights beta^k)."""
    beta = 0.9
    nets = [make(w_avg_beta=beta), make(w_avg_beta=beta)]
    gen = torch.Generator().manual_seed(5)
    weighted = torch.zeros(NUM_CLASSES, TINY["w_dim"], dtype=torch.float64)
    weights = torch.zeros(NUM_CLASSES, dtype=torch.float64)
    for rank, net in enumerate(nets):
        history = {c: [] for c in range(NUM_CLASSES)}
        for _ in range(3 + 5 * rank):
            labels = torch.randint(0, 2 + rank, (4,), generator=gen)  # class 2 only on rank 1; 3, 4 never
            w = torch.randn(4, TINY["w_dim"], generator=gen) + 2
            net._update_w_avg(w, labels)
            for c in labels.unique().tolist():
                history[c].append(w[labels == c].double().mean(0))
        for c, means in history.items():
            n = len(means)
            for k, m in enumerate(means):
                weighted[c] += (1 - beta) * beta ** (n - 1 - k) * m
                weights[c] += (1 - beta) * beta ** (n - 1 - k)
    w_avg, count = merge_w_averages(
        torch.stack([n.w_avg for n in nets]), torch.stack([n.w_avg_count for n in nets]), beta
    )
    seen = weights > 0
    assert seen.tolist() == [True, True, True, False, False]
    torch.testing.assert_close(w_avg[seen].double(), weighted[seen] / weights[seen][:, None], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(w_avg[2], nets[1].w_avg[2])  # seen by one process only: its average, not half of it
    assert torch.equal(w_avg[~seen], torch.zeros_like(w_avg[~seen])) and (count[~seen] == 0).all()
    # the merged count's total weight is the processes' mean total weight
    mean_weight = (1 - beta ** torch.stack([n.w_avg_count for n in nets]).double()).mean(0)
    torch.testing.assert_close(1 - beta ** count.double(), mean_weight)
    # identical processes merge to themselves, counts included (also infinite ones)
    with torch.no_grad():
        nets[0].w_avg_count[0] = math.inf
    same_avg, same_count = merge_w_averages(nets[0].w_avg.expand(3, -1, -1), nets[0].w_avg_count.expand(3, -1), beta)
    torch.testing.assert_close(same_avg, nets[0].w_avg)
    torch.testing.assert_close(same_count, nets[0].w_avg_count)


def test_checkpoint_without_w_avg_count_loads_as_a_converged_average() -> None:
    old = make()
    with torch.no_grad():
        old.w_avg.copy_(torch.randn_like(old.w_avg))
    state = old.state_dict()
    del state["w_avg_count"]  # as saved before the count existed
    net = make()
    net.load_state_dict(state, strict=True)
    assert torch.equal(net.w_avg, old.w_avg) and torch.isinf(net.w_avg_count).all()
    w = torch.randn(2, TINY["w_dim"])
    net._update_w_avg(w, torch.tensor([2, 2]))  # continues as the plain moving average it was
    beta = net.w_avg_beta
    torch.testing.assert_close(net.w_avg[2], beta * old.w_avg[2] + (1 - beta) * w.mean(0))
    assert "w_avg_count" in net.state_dict()


def test_different_labels_give_different_planes() -> None:
    net = make()
    z = inputs(1)[0].repeat(2, 1)
    planes = net(z, torch.tensor([0, 1]), noise_mode="const")
    assert not torch.allclose(planes[0], planes[1])


def test_extra_blocks_add_one_block_per_upsampling_block() -> None:
    eg3d, paper = make(extra_blocks=False), make(extra_blocks=True)
    num_up = int(math.log2(TINY["plane_resolution"])) - 2
    assert sum(b.up for b in eg3d.blocks) == sum(b.up for b in paper.blocks) == num_up
    assert eg3d.num_synthesis_blocks == len(eg3d.blocks) == 1 + num_up
    assert paper.num_synthesis_blocks == len(paper.blocks) == 1 + 2 * num_up
    # In the paper's layout every upsampling block is directly followed by a non-upsampling one at its resolution.
    for prev, block in zip(paper.blocks[:-1], paper.blocks[1:]):
        if prev.up:
            assert isinstance(block, SynthesisBlock) and not block.up and block.resolution == prev.resolution
    assert paper.num_ws == eg3d.num_ws + 2 * num_up

    def count(m: torch.nn.Module) -> int:
        return sum(p.numel() for p in m.parameters())

    extra = [b for b in paper.blocks if isinstance(b, SynthesisBlock) and not b.up]
    assert len(extra) == num_up
    assert count(paper) == count(eg3d) + sum(count(b) for b in extra)
    z, labels = inputs()
    assert paper(z, labels).shape == eg3d(z, labels).shape == (3, 3, 4, 16, 16)


def test_noise_modes() -> None:
    net = make()
    with torch.no_grad():
        for block in net.blocks:
            for m in block.modules():
                if hasattr(m, "strength"):
                    m.strength.fill_(0.5)
    ws = net.mapping(*inputs())
    assert torch.equal(net.synthesis(ws, noise_mode="const"), net.synthesis(ws, noise_mode="const"))
    assert torch.equal(net.synthesis(ws, noise_mode="none"), net.synthesis(ws, noise_mode="none"))
    assert not torch.allclose(net.synthesis(ws, noise_mode="random"), net.synthesis(ws, noise_mode="random"))
    assert not torch.allclose(net.synthesis(ws, noise_mode="const"), net.synthesis(ws, noise_mode="none"))
    with pytest.raises(ValueError):
        net.synthesis(ws, noise_mode="fixed")


@pytest.mark.parametrize("resolution", [24, 2, 0])
def test_bad_plane_resolution_raises(resolution: int) -> None:
    with pytest.raises(ValueError, match="plane_resolution"):
        make(plane_resolution=resolution)


@pytest.mark.parametrize("lr_multiplier", [1.0, 0.01])
def test_equal_linear_scaling(lr_multiplier: float) -> None:
    torch.manual_seed(0)
    fan_in = 256
    layer = EqualLinear(fan_in, 512, lr_multiplier=lr_multiplier)
    assert layer.scale == pytest.approx(lr_multiplier / math.sqrt(fan_in))
    assert layer.weight.std().item() == pytest.approx(1.0 / lr_multiplier, rel=0.05)
    out = layer(torch.randn(2048, fan_in))
    assert out.std().item() == pytest.approx(1.0, rel=0.1)
    biased = EqualLinear(fan_in, 4, bias_init=1.0, lr_multiplier=lr_multiplier)
    torch.testing.assert_close(biased(torch.zeros(1, fan_in)), torch.ones(1, 4))


def test_normalize_2nd_moment() -> None:
    x = normalize_2nd_moment(torch.randn(5, 64) * 7)
    torch.testing.assert_close(x.square().mean(1), torch.ones(5))


def test_fir_resampling_preserves_level_and_size() -> None:
    f = make_fir_filter()
    assert f.sum().item() == pytest.approx(1.0)
    x = torch.ones(1, 2, 8, 8)
    up = upsample2d(x, f)
    assert up.shape == (1, 2, 16, 16)
    torch.testing.assert_close(up[..., 2:-2, 2:-2], torch.ones(1, 2, 12, 12))
    down = downsample2d(x, f)
    assert down.shape == (1, 2, 4, 4)
    torch.testing.assert_close(down[..., 1:-1, 1:-1], torch.ones(1, 2, 2, 2))


def test_modulated_conv_up_and_demodulation() -> None:
    torch.manual_seed(0)
    conv = ModulatedConv2d(16, 8, 3, w_dim=32, up=True)
    y = conv(torch.randn(2, 16, 8, 8), torch.randn(2, 32))
    assert y.shape == (2, 8, 16, 16)
    # Demodulation makes the output scale independent of the style's magnitude.
    conv = ModulatedConv2d(16, 8, 3, w_dim=32)
    x, w = torch.randn(2, 16, 8, 8), torch.randn(2, 32)
    with torch.no_grad():
        a = conv(x, w)
        conv.affine.weight.mul_(10.0)
        conv.affine.bias.mul_(10.0)
        b = conv(x, w)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_fir_filter_derivatives_are_torchs_and_twice_differentiable():
    """The resampling filter's value, input gradient and R1-style gradient of the gradient's norm with respect to
    the weights around it equal plain autograd through a grouped ``conv2d`` bit for bit; gradcheck and gradgradcheck
    confirm the derivatives in float64."""
    def grouped(x, f, pad, gain=1.0):
        x = F.pad(x, [pad[0], pad[1], pad[0], pad[1]])
        return F.conv2d(x, (f * gain).flip([0, 1]).to(x.dtype)[None, None].repeat(x.shape[1], 1, 1, 1), groups=x.shape[1])

    f = make_fir_filter()
    torch.manual_seed(0)
    x = torch.randn(3, 6, 12, 12, requires_grad=True)
    w = torch.randn(6, 6, 3, 3, requires_grad=True)
    def node_names(root):
        seen, stack = set(), [root]
        while stack:
            node = stack.pop()
            if node is not None and node not in seen:
                seen.add(node)
                stack.extend(next_node for next_node, _ in node.next_functions)
        return [type(node).__name__ for node in seen]

    results, generic_double_backwards = [], []
    for fir in (grouped, fir_filter2d):
        y = fir(F.leaky_relu(F.conv2d(fir(x, f, (2, 1), gain=4.0), w), 0.2), f, (1, 1))[:, :, ::2, ::2]
        (g,) = torch.autograd.grad(y.square().sum(), x, create_graph=True)
        generic_double_backwards.append(node_names(g.grad_fn).count("ConvolutionBackwardBackward0"))
        (gw,) = torch.autograd.grad(g.square().sum(), w)
        results.append((y.detach(), g.detach(), gw))
    for got, want in zip(results[1], results[0]):
        assert torch.equal(got, want)
    # torch's generic double backward is left only for the one ordinary convolution, not the two filters
    assert generic_double_backwards == [3, 1]
    x64 = torch.randn(2, 3, 6, 6, dtype=torch.float64, requires_grad=True)
    fn = lambda t: fir_filter2d(t, f.double(), (1, 2), gain=2.0)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x64,))
    assert torch.autograd.gradgradcheck(fn, (x64,))
    f_learnable = f.clone().requires_grad_(True)
    with pytest.raises(ValueError, match="fixed"):
        fir_filter2d(x, f_learnable, (1, 1))
