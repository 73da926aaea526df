"""A run killed with SIGKILL at random moments (during a checkpoint write, while writing the last samples, during a
data-archive read, anywhere) resumes to exactly the weights of an uninterrupted run and leaves no temporary files after its next save."""

from __future__ import annotations

import concurrent.futures
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Tuple

import pytest
import torch

from photo_fixtures import make_photo_tree
from triplane_gan_ns.data.prepare import prepare_dataset
from triplane_gan_ns.runs import checkpoint_steps

FAULTY_TRAIN = str(Path(__file__).parent / "helpers" / "faulty_train.py")
STEPS = 6  # steps 0..5; checkpoints after steps 2 and 4 and at the end (5)
SAVES = 3
FIRST_SAVE_STEP = 2
BATCH = 4
COMMON = [
    "triplane-gan-tiny",
    "--steps-per-save", "2",
    "--logging.steps-per-log", "1",
    "--pipeline.r1-interval", "2",
    "--pipeline.density-reg-interval", "2",
    "--pipeline.augment.mode", "ada",
    "--pipeline.augment.probability", "0.5",
    "--pipeline.augment.interval", "2",
    "--pipeline.style-mixing-prob", "0.5",
    "--pipeline.datamanager.batch-size", str(BATCH),
    "--pipeline.datamanager.cache-images", "False",  # every step reads its images from the archive
    "--preview-resolution", "32",  # previews at the images' size (the preset's 128² would cost seconds per save)
]
# Every process on one thread: runs with the same thread count compute bit-identical results.
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _train(fault: str, out: Path, stamp: str, archive: Path, extra: List[str] = ()) -> subprocess.CompletedProcess:
    command = [sys.executable, FAULTY_TRAIN, fault, *COMMON, *extra, "--output-dir", str(out), "--timestamp", stamp,
               "triplane-gan-imagenet", "--data", str(archive)]
    return subprocess.run(command, capture_output=True, text=True, env=ENV, timeout=900)


def _run_dir(out: Path, stamp: str) -> Path:
    return out / "unnamed" / "triplane-gan-tiny" / stamp


def _temporaries(folder: Path) -> List[Path]:
    return [p for p in folder.rglob(".*") if ".tmp-" in p.name]


def _killed_and_resumed(fault: str, out: Path, archive: Path) -> Tuple[subprocess.CompletedProcess, List[Path], List[Tuple[bool, str]]]:
    """Run with ``fault``, then resume in the same run folder from its latest checkpoint (or start again when
    none was written) until the run completes.  Returns the faulty run, the temporaries it left, and for each resume whether it loaded a checkpoint and its output."""
    stamp = "chain"
    killed = _train(fault, out, stamp, archive, ["--max-num-iterations", str(STEPS)])
    left = _temporaries(_run_dir(out, stamp))
    logs = []
    for _ in range(3):
        models = _run_dir(out, stamp) / "nerfstudio_models"
        steps = checkpoint_steps(models)
        done = max(steps, default=-1)
        if done == STEPS - 1:
            break
        extra = ["--max-num-iterations", str(STEPS - 1 - done)]
        if steps:
            extra += ["--load-dir", str(models)]
        resumed = _train("none", out, stamp, archive, extra)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        logs.append((bool(steps), resumed.stdout))
    return killed, left, logs


def _weights(run_dir: Path) -> Dict[str, torch.Tensor]:
    steps = checkpoint_steps(run_dir / "nerfstudio_models")
    assert max(steps) == STEPS - 1, steps
    state = torch.load(steps[STEPS - 1], map_location="cpu", weights_only=True)
    return state["pipeline"]


# (fault, seed): each seed draws its own moment to kill
SCENARIOS = [("checkpoint", 0), ("archive", 1), ("after", 2), ("samples", 3)]


@pytest.fixture(scope="module")
def fault_runs(tmp_path_factory):
    """The uninterrupted reference run, then every faulty run and its resumes, two processes at a time."""
    root = tmp_path_factory.mktemp("faults")
    make_photo_tree(root / "photos")
    archive = root / "archive"
    prepare_dataset(root / "photos", archive, resolution=32, shard_size=3, workers=1)
    start = time.perf_counter()
    reference = _train("none", root / "reference", "full", archive, ["--max-num-iterations", str(STEPS)])
    assert reference.returncode == 0, reference.stderr[-3000:]
    duration = time.perf_counter() - start
    faults = {}
    for kind, seed in SCENARIOS:
        rng = random.Random(seed)
        value = {
            # from the second save on, and reads after the first save, so that the run resumes from a checkpoint
            "checkpoint": lambda: rng.randint(2, SAVES),
            "samples": lambda: SAVES,  # the final step's samples: the run must not count as complete
            "archive": lambda: rng.randint(FIRST_SAVE_STEP * BATCH + BATCH + 1, STEPS * BATCH),
            "after": lambda: round(rng.uniform(0.35, 0.9) * duration, 2),  # anywhere: imports, set-up, a step, a save
        }[kind]()
        faults[(kind, seed)] = f"{kind}:{value}"
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        futures = {
            key: pool.submit(_killed_and_resumed, fault, root / f"{key[0]}-{key[1]}", archive)
            for key, fault in faults.items()
        }
        results = {key: future.result() for key, future in futures.items()}
    return {
        "reference": _weights(_run_dir(root / "reference", "full")),
        "runs": {key: (faults[key], root / f"{key[0]}-{key[1]}", *results[key]) for key in faults},
    }


@pytest.mark.long
@pytest.mark.parametrize("scenario", SCENARIOS, ids=[f"{k}-seed{s}" for k, s in SCENARIOS])
def test_killed_run_resumes_to_identical_weights(fault_runs, scenario):
    fault, out, killed, left, logs = fault_runs["runs"][scenario]
    kind = scenario[0]
    if kind in ("checkpoint", "archive", "samples"):  # these strike after the first save, before the run ends
        assert killed.returncode == -9, (fault, killed.returncode, killed.stderr[-2000:])
        assert logs and logs[0][0], (fault, "the killed run left no checkpoint to resume from")
    if kind == "checkpoint":  # killed half-way through the bytes of a checkpoint: its temporary file is left
        assert any(p.name.startswith(".step-") and p.suffix == ".ckpt" for p in left), (fault, left)
    if kind == "samples":  # killed half-way through the final orbit GIF: it is left, and the final step is redone
        assert any(p.name.startswith(".orbit-latest.tmp-") for p in left), (fault, left)
    for loaded, log in logs:
        assert ("Resumed from" in log) == loaded, log[-2000:]
    after = _weights(_run_dir(out, "chain"))
    reference = fault_runs["reference"]
    assert after.keys() == reference.keys()
    different = [k for k in reference if not torch.equal(after[k], reference[k])]
    assert not different, (fault, different[:5])
    assert not _temporaries(_run_dir(out, "chain")), (fault, _temporaries(_run_dir(out, "chain")))
