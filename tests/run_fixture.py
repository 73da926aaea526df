"""A session-wide tiny training run (4 steps of ``ns-train triplane-gan-tiny``) for tests that use a trained
generator.  Registered once for the whole session by ``pytest_plugins`` in conftest.py (importing the fixture
into test modules would define it once per module, and train once per module)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

NS_TRAIN = str(Path(sys.executable).with_name("ns-train"))


@pytest.fixture(scope="session")
def trained_tiny_run(tmp_path_factory) -> Path:
    """Run folder (config.yml, class_index.json, nerfstudio_models/, ns-train-stdout.txt) of a 4-step tiny run."""
    out = tmp_path_factory.mktemp("trained-runs")
    result = subprocess.run(
        [
            NS_TRAIN, "triplane-gan-tiny",
            "--max-num-iterations", "4",
            "--steps-per-save", "2",
            "--save-only-latest-checkpoint", "False",
            "--output-dir", str(out),
            "--experiment-name", "tiny",
            "--timestamp", "run",
            "--pipeline.r1-interval", "2",
            # 8 + 8 samples per ray (the preset: 4 + 8): the run the tool tests were written against.  After 4
            # steps the generator is still haze, and at 4 coarse samples a view and its opposite look nearly
            # alike (the camera-search test then picks yaw 315 for 135).
            "--pipeline.model.generator.num-coarse-samples", "8",
            "--pipeline.model.generator.num-importance-samples", "8",
            "--preview-resolution", "48",  # previews larger than the 32² images (the preset shows 128²)
        ],
        capture_output=True, text=True, timeout=900, env=dict(os.environ),
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    run = out / "tiny" / "triplane-gan-tiny" / "run"
    (run / "ns-train-stdout.txt").write_text(result.stdout)
    return run
