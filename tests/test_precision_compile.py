"""bf16 autocast (``--mixed-precision``) and ``--compile`` take the same training steps as the fp32 eager loop.

On CPU nerfstudio turns mixed precision off; the trainer turns it back on where the CPU has native bf16, and the
tests force that code path on any CPU (torch emulates bf16 where the hardware lacks it).
Compilation uses the ``aot_eager`` backend: it traces the same graphs as inductor without generating kernels.
Both runs cover an R1 step (step 0) and a plain step (step 1).
"""

from __future__ import annotations

from typing import Dict, List

from pathlib import Path

import pytest
import torch

from triplane_gan_ns.fields.decoder import Decoder
from triplane_gan_ns.layers import StyledConv, ToRGB
from triplane_gan_ns.training import trainer as trainer_module

R1_EVERY_OTHER_STEP = {"pipeline__r1_interval": 2}


def _losses(trainer, steps: int) -> List[Dict[str, float]]:
    rows = []
    for step in range(steps):
        _, loss_dict, _ = trainer.train_iteration(step)
        rows.append({k: float(v) for k, v in loss_dict.items()})
    return rows


def _first_conv(module: torch.nn.Module) -> torch.nn.Module:
    """The first convolution layer (EqualConv2d, ModulatedConv2d) of a network."""
    return next(m for m in module.modules() if type(m).__name__.endswith("Conv2d"))


def _record_dtypes(trainer) -> List[torch.dtype]:
    dtypes: List[torch.dtype] = []
    model = trainer.pipeline.gan_model
    for net in (model.discriminator, model.generator.backbone):
        _first_conv(net).register_forward_hook(lambda _m, _i, out: dtypes.append(out.dtype))
    return dtypes


def test_bf16_autocast_step_matches_fp32(tiny_trainer):
    reference = tiny_trainer(**R1_EVERY_OTHER_STEP)
    reference_dtypes = _record_dtypes(reference)
    expected = _losses(reference, 2)

    trainer = tiny_trainer(**R1_EVERY_OTHER_STEP)
    assert trainer.mixed_precision is False  # off unless asked for
    trainer.mixed_precision = True  # bf16 autocast, whatever this CPU has
    dtypes = _record_dtypes(trainer)
    got = _losses(trainer, 2)

    assert set(reference_dtypes) == {torch.float32}
    assert set(dtypes) == {torch.bfloat16}  # the convolutions really ran in bf16
    assert "r1" in got[0] and "r1" not in got[1]
    for want, have in zip(expected, got):
        assert want.keys() == have.keys()
        for key in want:
            assert have[key] == pytest.approx(want[key], rel=0.1, abs=0.02), key
    params = dict(trainer.pipeline.named_parameters())
    assert all(p.dtype == torch.float32 for p in params.values())
    for name, p in reference.pipeline.named_parameters():
        assert torch.isfinite(params[name]).all(), name
        torch.testing.assert_close(params[name], p, rtol=0.05, atol=0.02)


def test_compiled_step_matches_eager(tiny_trainer):
    eager = tiny_trainer(**R1_EVERY_OTHER_STEP)
    expected = _losses(eager, 2)

    compiled = tiny_trainer(compile=True, compile_backend="aot_eager", **R1_EVERY_OTHER_STEP)
    model = compiled.pipeline.gan_model
    assert "forward" in vars(model.discriminator) and "synthesis" in vars(model.generator.backbone)
    got = _losses(compiled, 2)

    assert "r1" in got[0]
    for want, have in zip(expected, got):
        assert want.keys() == have.keys()
        for key in want:
            assert have[key] == pytest.approx(want[key], rel=1e-4, abs=1e-5), key
    assert compiled.pipeline.state_dict().keys() == eager.pipeline.state_dict().keys()  # checkpoints unchanged
    for name, p in eager.pipeline.named_parameters():
        torch.testing.assert_close(dict(compiled.pipeline.named_parameters())[name], p, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("native", [True, False])
def test_cpu_mixed_precision_follows_native_bf16(tiny_trainer, monkeypatch, native):
    """``--mixed-precision True`` on a CPU runs bf16 autocast exactly where the CPU has native bf16."""
    monkeypatch.setattr(trainer_module, "cpu_has_native_bf16", lambda: native)
    trainer = tiny_trainer(mixed_precision=True)
    assert trainer.mixed_precision is native
    dtypes = _record_dtypes(trainer)
    _, losses, _ = trainer.train_iteration(1)
    assert set(dtypes) == ({torch.bfloat16} if native else {torch.float32})
    assert all(torch.isfinite(v) for v in losses.values())


def test_native_bf16_detection_matches_cpuinfo():
    """Independent reference: the kernel's CPU flags (Linux)."""
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        pytest.skip("no /proc/cpuinfo")
    flags = set()
    for line in cpuinfo.read_text().splitlines():
        if line.startswith("flags"):
            flags |= set(line.split(":", 1)[1].split())
    assert trainer_module.cpu_has_native_bf16() == bool(flags & {"avx512_bf16", "amx_tile"})


def test_decoder_and_torgb_return_float32_under_autocast():
    """Under bf16 autocast the decoder's layers run in bf16, but density/colour (which volume rendering
    composites) and ToRGB's output path (summed over blocks) stay float32, close to the float32 results; the
    synthesis layers' activations stay bf16."""
    torch.manual_seed(0)
    decoder = Decoder(8, 32, 2, 9)
    x = torch.randn(5000, 8)
    torgb = ToRGB(16, 3, w_dim=8, up=True)
    with torch.no_grad():
        torgb.bias.normal_()
    features, w, skip = torch.randn(2, 16, 8, 8), torch.randn(2, 8), torch.randn(2, 3, 4, 4)
    want_decoder, want_rgb = decoder(x), torgb(features, w, skip)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got_decoder, got_rgb = decoder(x), torgb(features, w, skip)
    assert got_decoder.dtype == torch.float32 and got_rgb.dtype == torch.float32
    styled = StyledConv(16, 16, 3, w_dim=8, resolution=8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert styled(features, w).dtype == torch.bfloat16  # the bias is added in bf16: no float32 round trip
    assert not torch.equal(got_decoder, want_decoder)  # the layers did run in bf16
    torch.testing.assert_close(got_decoder, want_decoder, rtol=0.05, atol=0.05)
    torch.testing.assert_close(got_rgb, want_rgb, rtol=0.05, atol=0.05)


def test_decoder_backward_inside_autocast_keeps_the_forwards_precision():
    """A backward called inside autocast (as a benchmark or a user's loop may) recomputes the hidden layers in the
    saved tensors' precision: float32 gradients equal those of a backward outside autocast."""
    torch.manual_seed(0)
    decoder = Decoder(8, 32, 2, 9, chunk=1000)
    x = torch.randn(3000, 8, requires_grad=True)
    grad = torch.randn(3000, 9)
    want = torch.autograd.grad(decoder(x), [x, *decoder.parameters()], grad)
    out = decoder(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = torch.autograd.grad(out, [x, *decoder.parameters()], grad)
    for a, b in zip(got, want):
        assert a.dtype == torch.float32
        torch.testing.assert_close(a, b, rtol=0, atol=0)
