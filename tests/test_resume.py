"""A run killed with SIGKILL resumes from its last checkpoint and continues with identical losses."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

NS_TRAIN = str(Path(sys.executable).with_name("ns-train"))
COMMON = [
    "triplane-gan-tiny",
    "--steps-per-save", "3",
    "--save-only-latest-checkpoint", "False",
    "--logging.steps-per-log", "1",
    "--pipeline.r1-interval", "2",
    "--pipeline.density-reg-interval", "2",
    "--pipeline.augment.mode", "ada",
    "--pipeline.augment.probability", "0.5",
    "--pipeline.augment.interval", "2",
    "--pipeline.style-mixing-prob", "0.5",
]


def _losses(run_dir: Path) -> dict:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir))
    acc.Reload()
    out = {}
    for tag in acc.Tags()["scalars"]:
        if tag.startswith("Train Loss Dict/"):
            for event in acc.Scalars(tag):
                out[(tag.split("/", 1)[1], event.step)] = event.value
    return out


def test_killed_run_resumes_with_identical_losses(tmp_path):
    env = dict(os.environ)
    full = subprocess.run(
        [NS_TRAIN, *COMMON, "--max-num-iterations", "6", "--output-dir", str(tmp_path), "--timestamp", "full"],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert full.returncode == 0, full.stderr[-3000:]
    run_dir = tmp_path / "unnamed" / "triplane-gan-tiny"

    # the same run, killed hard as soon as its step-3 checkpoint exists
    killed = subprocess.Popen(
        [NS_TRAIN, *COMMON, "--max-num-iterations", "6", "--output-dir", str(tmp_path), "--timestamp", "killed"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
    )
    ckpt = run_dir / "killed" / "nerfstudio_models" / "step-000000003.ckpt"
    deadline = time.time() + 600
    while not ckpt.exists() and killed.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert ckpt.exists()
    assert not list(ckpt.parent.glob(".*.tmp-*")) or killed.returncode == -signal.SIGKILL

    resumed = subprocess.run(
        [NS_TRAIN, *COMMON, "--max-num-iterations", "2", "--output-dir", str(tmp_path), "--timestamp", "resumed",
         "--load-dir", str(ckpt.parent), "--load-step", "3"],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Resumed from" in resumed.stdout
    reference = _losses(run_dir / "full")
    after = _losses(run_dir / "resumed")
    keys = sorted(k for k in after if k[1] in (4, 5))
    assert {k[0] for k in keys} >= {"generator", "discriminator"}, after
    assert len(keys) >= 4
    for key in keys:
        assert after[key] == pytest.approx(reference[key], rel=1e-6, abs=1e-7), key
