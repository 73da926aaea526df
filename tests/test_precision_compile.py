"""bf16 autocast (``--mixed-precision``) and ``--compile`` take the same training steps as the fp32 eager loop.

On CPU nerfstudio turns mixed precision off; the test forces the GPU code path (bf16 autocast) on the CPU.
Compilation uses the ``aot_eager`` backend: it traces the same graphs as inductor without generating kernels.
Both runs cover an R1 step (step 0) and a plain step (step 1).
"""

from __future__ import annotations

from typing import Dict, List

import pytest
import torch

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
    assert trainer.mixed_precision is False  # nerfstudio: no mixed precision on CPU
    trainer.mixed_precision = True  # the GPU path, on the CPU
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
