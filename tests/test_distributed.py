"""Two CPU processes on the gloo backend through torchrun: different data per rank, identical weights."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

TORCHRUN = str(Path(sys.executable).with_name("torchrun"))
WORKER = str(Path(__file__).parent / "helpers" / "ddp_worker.py")


def test_two_ranks_see_different_data_and_end_identical(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [
            TORCHRUN, "--nproc-per-node", "2", "--master-port", "29517", WORKER, str(tmp_path),
            "triplane-gan-tiny", "--machine.device-type", "cpu", "--max-num-iterations", "3",
            "--steps-per-save", "100", "--output-dir", str(tmp_path / "runs"), "--pipeline.r1-interval", "2",
            "--preview-resolution", "32", "--pipeline.augment.mode", "ada", "--pipeline.augment.interval", "1", "--pipeline.augment.speed-kimg", "0.01",
        ],
        capture_output=True, text=True, env=env, timeout=900,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["world"] == ranks[1]["world"] == 2
    seen0, seen1 = set(ranks[0]["seen"]), set(ranks[1]["seen"])
    assert len(ranks[0]["seen"]) == len(ranks[1]["seen"]) == 3 * 4
    assert not seen0 & seen1  # disjoint shards of the same epoch
    d0, d1 = ranks[0]["digest"], ranks[1]["digest"]
    assert d0.keys() == d1.keys()
    for key in d0:
        assert d0[key] == d1[key], key  # weights, EMA, w averages, augmentation state agree exactly
    assert d0["augmenter.p"] != 0.0  # the shared ADA statistic moved the probability
    # only rank 0 writes the run's files
    ckpts = list((tmp_path / "runs").rglob("step-*.ckpt"))
    assert len(ckpts) == 1
