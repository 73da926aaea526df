"""Datamanager for GAN training: endless shuffled batches of real images with their class labels.

Unlike nerfstudio's ray datamanagers it hands out whole images, not rays: ``next_train`` returns
``{"image": [B, 3, R, R] in [0, 1], "label": [B]}`` on the training device.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, Literal, Type, Union

import torch
from nerfstudio.data.datamanagers.base_datamanager import DataManager, DataManagerConfig
from torch import Tensor
from torch.utils.data import DataLoader

from triplane_gan_ns.data.dataset import ClassImageDataset
from triplane_gan_ns.data.renders_dataparser import RendersDataParserConfig


@dataclass
class GanDataManagerConfig(DataManagerConfig):
    """Batches of labelled images at one square resolution (the generator's output resolution)."""

    _target: Type = field(default_factory=lambda: GanDataManager)
    dataparser: RendersDataParserConfig = field(default_factory=RendersDataParserConfig)
    """Which images exist and their classes."""
    resolution: int = 64
    """Images are centre-cropped and resized to this square size; the generator renders at this size."""
    batch_size: int = 32
    """Real images per step (and latents per step)."""
    num_workers: int = 0
    """DataLoader worker processes (0 decodes on the main process)."""
    cache_images: bool = True
    """Decode every image once and keep them in memory (small data sets)."""
    seed: int = 0
    """Seed of the shuffling."""


class GanDataManager(DataManager):
    config: GanDataManagerConfig

    def __init__(
        self,
        config: GanDataManagerConfig,
        device: Union[torch.device, str] = "cpu",
        test_mode: Literal["test", "val", "inference"] = "val",
        world_size: int = 1,
        local_rank: int = 0,
        **kwargs,
    ) -> None:
        self.config = config
        self.device = device
        self.test_mode = test_mode
        self.world_size = world_size
        self.local_rank = local_rank
        if config.data is not None:
            config.dataparser.data = Path(config.data)
        self.dataparser = config.dataparser.setup()
        self.train_dataparser_outputs = self.dataparser.get_dataparser_outputs(split="train")
        self.train_dataset = ClassImageDataset(
            self.train_dataparser_outputs,
            resolution=config.resolution,
            cache_images=config.cache_images and test_mode != "inference",
        )
        self.eval_dataset = None
        self._iterator: Iterator | None = None
        super().__init__()

    def setup_train(self) -> None:
        generator = torch.Generator().manual_seed(self.config.seed)
        self.train_dataloader = DataLoader(
            self.train_dataset,
            batch_size=min(self.config.batch_size, len(self.train_dataset)),
            shuffle=True,
            drop_last=True,
            generator=generator,
            num_workers=self.config.num_workers,
            persistent_workers=self.config.num_workers > 0,
            pin_memory=str(self.device).startswith("cuda"),
        )

    def setup_eval(self) -> None:
        """No held-out split: GAN evaluation compares generated images with the training images."""

    def next_train(self, step: int) -> Dict[str, Tensor]:  # type: ignore[override]
        self.train_count += 1
        if self._iterator is None:
            self._iterator = iter(self.train_dataloader)
        try:
            batch = next(self._iterator)
        except StopIteration:
            self._iterator = iter(self.train_dataloader)
            batch = next(self._iterator)
        return {
            "image": batch["image"].permute(0, 3, 1, 2).to(self.device, non_blocking=True),
            "label": batch["label"].to(self.device),
        }

    def get_train_rays_per_batch(self) -> int:
        """Pixels per batch (nerfstudio reports them as rays/s)."""
        return self.config.batch_size * self.config.resolution**2

    def get_datapath(self) -> Path:
        return Path(self.train_dataparser_outputs.metadata.get("root", self.config.dataparser.data))

    def get_param_groups(self) -> Dict[str, list]:
        return {}
