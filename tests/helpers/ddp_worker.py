"""Run under torchrun by tests/test_distributed.py: trains the tiny preset through the same entry point as
users, recording which images each rank saw and a digest of its final weights."""

import json
import sys
from pathlib import Path

import torch

from triplane_gan_ns.training import launch
from triplane_gan_ns.training.trainer import GanTrainer

out_dir = Path(sys.argv[1])
seen = []
original = GanTrainer.setup


def setup_and_record(self, *args, **kwargs):
    original(self, *args, **kwargs)
    dm = self.pipeline.datamanager
    next_batch = dm._next_batch

    def recording():
        batch = next_batch()
        seen.extend(batch["image_idx"].tolist())
        return batch

    dm._next_batch = recording


GanTrainer.setup = setup_and_record
sys.argv = ["launch", *sys.argv[2:]]
config = launch.tyro.cli(launch.AnnotatedBaseConfigUnion)
trainer = launch.run(config)
rank = torch.distributed.get_rank()
state = trainer.pipeline.state_dict()
digest = {k: float(v.double().sum()) for k, v in state.items() if v.is_floating_point()}
(out_dir / f"rank{rank}.json").write_text(json.dumps({"seen": seen, "digest": digest, "world": trainer.world_size}))
torch.distributed.destroy_process_group()
