"""Distributed training under ``torchrun`` (elastic; clusters and schedulers), with the trainer of ``ns-train``.

    torchrun --nproc-per-node 8 -m triplane_gan_ns.training.launch triplane-gan --data /imagenet
    torchrun --nnodes 4 --nproc-per-node 8 --rdzv-backend c10d --rdzv-endpoint HOST:29400 \\
        -m triplane_gan_ns.training.launch triplane-gan --data /imagenet

The arguments are exactly those of ``ns-train``.  On GPUs nerfstudio's own launcher works too
(``ns-train triplane-gan --machine.num-devices 8``); this entry point adds CPU (gloo) and elastic launches,
which nerfstudio 1.1.5's launcher does not support.  Every rank trains on its own shard of the data; the
gradients, the generator's running averages and the augmentation statistics are averaged across ranks.
"""

from __future__ import annotations

import os
from datetime import timedelta

import torch
import torch.distributed as dist
import tyro
from nerfstudio.configs.method_configs import AnnotatedBaseConfigUnion
from nerfstudio.engine.trainer import Trainer, TrainerConfig
from nerfstudio.scripts.train import _set_random_seed

from triplane_gan_ns.errors import UserError, install_excepthook


def init_distributed(device_type: str) -> tuple[int, int, int]:
    """(rank, local_rank, world_size) from torchrun's environment; starts the process group."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        raise UserError("run this module under torchrun (RANK/WORLD_SIZE are not set); for one process use ns-train")
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    if device_type == "cuda":
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo", timeout=timedelta(minutes=30))
    return rank, local_rank, world_size


def run(config: TrainerConfig) -> Trainer:
    """Set up and train on this rank; returns the trainer."""
    if config.data:
        config.pipeline.datamanager.data = config.data
    if hasattr(config, "check_settings"):  # every rank stops on bad settings, not only the one writing config.yml
        config.check_settings()
    rank, local_rank, world_size = init_distributed(config.machine.device_type)
    config.set_timestamp()
    stamp = [config.timestamp]
    dist.broadcast_object_list(stamp, src=0)  # one run directory for all ranks
    config.timestamp = stamp[0]
    if rank == 0:
        config.print_to_terminal()
        config.save_config()
    dist.barrier()
    _set_random_seed(config.machine.seed + rank)
    trainer = config.setup(local_rank=local_rank, world_size=world_size)
    trainer.setup()
    trainer.train()
    return trainer


def entrypoint() -> None:
    install_excepthook()
    tyro.extras.set_accent_color("bright_yellow")
    config = tyro.cli(AnnotatedBaseConfigUnion, description=__doc__)
    try:
        run(config)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    entrypoint()
