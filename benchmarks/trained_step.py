"""A trained generator's training step: resume a run and time its steps, or show where they go.

Usage: python benchmarks/trained_step.py RUN_DIR [--step N] [--steps 32] [--rounds 3] [--profile]

RUN_DIR is a training run's folder (``config.yml`` and ``nerfstudio_models/``), e.g. the output of ``ns-train
triplane-gan-tiny-long``.  Each round resumes the run from its checkpoint (``--step``, default the latest) in a
process of its own and reports the median of ``--steps`` steps after 3 warm-up steps; a trained generator's step
can cost more than a fresh one's (values far below float32's normal range in the optimizer and the renderer).
``--profile`` instead prints the operators that took most CPU time over 4 steps.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

WARMUP = 3


def _trainer(run_dir: Path, step):
    import torch

    from triplane_gan_ns.runs import load_config

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from presets import setup_trainer

    config = load_config(run_dir / "config.yml")
    config.load_dir = run_dir / "nerfstudio_models"
    config.load_step = step
    trainer = setup_trainer(config)
    torch.manual_seed(0)
    return trainer


def measure(run_dir: Path, step, steps: int) -> dict:
    trainer = _trainer(run_dir, step)
    first = trainer._start_step
    for s in range(first, first + WARMUP):
        trainer.train_iteration(s)
    times = []
    for s in range(first + WARMUP, first + WARMUP + steps):
        start = time.perf_counter()
        trainer.train_iteration(s)
        times.append(time.perf_counter() - start)
    return {"step": first - 1, "median": statistics.median(times), "min": min(times)}


def profile(run_dir: Path, step, top: int = 40) -> None:
    import torch

    trainer = _trainer(run_dir, step)
    first = trainer._start_step
    for s in range(first, first + WARMUP):
        trainer.train_iteration(s)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for s in range(first + WARMUP, first + WARMUP + 4):
            trainer.train_iteration(s)
    rows = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in rows)
    print(f"resumed after step {first - 1}; CPU time per step {total / 4e6:.3f} s (all threads' operators)")
    print("| operator | ms per step | calls per step |")
    print("| --- | ---: | ---: |")
    for e in rows[:top]:
        print(f"| {e.key} | {e.self_cpu_time_total / 4e3:.1f} | {e.count // 4} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--step", type=int, default=None, help="checkpoint step to resume (default: the latest)")
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not (args.run_dir / "config.yml").is_file():
        raise SystemExit(f"{args.run_dir}: no config.yml; pass a training run's folder")
    if args.profile:
        profile(args.run_dir, args.step)
        return
    if args.one:
        print(json.dumps(measure(args.run_dir, args.step, args.steps)))
        return
    import torch

    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    cmd = [sys.executable, __file__, str(args.run_dir), "--one", "--steps", str(args.steps)]
    if args.step is not None:
        cmd += ["--step", str(args.step)]
    for i in range(args.rounds):
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode != 0:
            raise SystemExit(out.stderr[-2000:])
        result = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"round {i}: resumed after step {result['step']}: median {result['median']:.3f} s, "
              f"fastest {result['min']:.3f} s per step")


if __name__ == "__main__":
    main()
