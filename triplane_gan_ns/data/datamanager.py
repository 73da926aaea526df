"""Datamanager for GAN training: endless shuffled batches of real images with their class labels.

Unlike nerfstudio's ray datamanagers it hands out whole images, not rays: ``next_train`` returns
``{"image": [B, 3, R, R] in [0, 1], "label": [B]}`` on the training device.  Unreadable files never reach the
model: each one is replaced by a readable image of the same batch (with its label), counted once in
``skipped_files`` and reported in a warning at most once per ``warn_every`` steps.

Outside training (nerfstudio's ``test_mode`` "test" or "inference": the viewers) a missing data folder is no
error: the training set is then the run's class index (``ClassIndexDataset``: class names and resolution, no
images), which is all the generator needs; training stops on it with the dataparser's one-line error.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from functools import lru_cache
from importlib.metadata import entry_points
from typing import Dict, Iterator, List, Literal, Optional, Type, Union

import torch
import torch.distributed as dist
import tyro
from nerfstudio.data.datamanagers.base_datamanager import DataManager, DataManagerConfig
from nerfstudio.data.dataparsers.base_dataparser import DataParserConfig, DataparserOutputs
from nerfstudio.data.scene_box import SceneBox
from nerfstudio.utils.rich_utils import CONSOLE
from torch import Tensor
from torch.utils.data import DataLoader, Sampler

from triplane_gan_ns.data.class_index import ClassIndexDataset, class_index_outputs, read_class_index
from triplane_gan_ns.data.dataset import ClassImageDataset
from triplane_gan_ns.data.renders_dataparser import RendersDataParserConfig
from triplane_gan_ns.errors import DataNotFound, UserError


def _registered_dataparsers() -> Dict[str, DataParserConfig]:
    """This package's dataparsers as registered with nerfstudio (pyproject's ``nerfstudio.dataparser_configs``
    entry points, the one table of them), by name."""
    found = {
        ep.name: ep.load().config
        for ep in entry_points(group="nerfstudio.dataparser_configs")
        if ep.value.startswith("triplane_gan_ns.")
    }
    return dict(sorted(found.items(), key=lambda item: item[0] != "triplane-gan-renders")) or {
        "triplane-gan-renders": RendersDataParserConfig()
    }


DATAPARSERS = _registered_dataparsers()
"""The dataparsers a GAN datamanager accepts, by the name registered with nerfstudio (the subcommand name);
the embedded renders first."""

DataParserChoice = tyro.conf.OmitSubcommandPrefixes[
    tyro.extras.subcommand_type_from_defaults(DATAPARSERS, prefix_names=False)  # type: ignore[misc]
]


class StepBatchSampler(Sampler[List[int]]):
    """Endless batches that are a pure function of (seed, step, rank), so a resumed run sees the same data.

    The data is read in epochs, each a permutation seeded by ``seed + epoch``; step ``s`` takes the global
    positions ``[s * B * W, (s + 1) * B * W)`` of the concatenated epochs and rank ``r`` its ``B``-slice, so the
    ranks of a distributed run see different images.
    """

    def __init__(self, num_items: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1) -> None:
        self.num_items = num_items
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.start_step = 0

    @lru_cache(maxsize=2)
    def _permutation(self, epoch: int) -> List[int]:
        return torch.randperm(self.num_items, generator=torch.Generator().manual_seed(self.seed + epoch)).tolist()

    def indices(self, step: int) -> List[int]:
        start = (step * self.world_size + self.rank) * self.batch_size
        return [self._permutation(p // self.num_items)[p % self.num_items] for p in range(start, start + self.batch_size)]

    def __iter__(self) -> Iterator[List[int]]:
        step = self.start_step
        while True:
            yield self.indices(step)
            step += 1


@dataclass
class GanDataManagerConfig(DataManagerConfig):
    """Batches of labelled images at one square resolution (the generator's output resolution)."""

    _target: Type = field(default_factory=lambda: GanDataManager)
    dataparser: DataParserChoice = field(default_factory=RendersDataParserConfig)  # type: ignore[valid-type]
    """Rendered views (triplane-gan-renders) or photos in class folders or an archive (triplane-gan-imagenet)."""
    resolution: int = 64
    """Images are centre-cropped and resized to this square size; the generator renders at this size."""
    batch_size: int = 32
    """Real images per step (and latents per step)."""
    num_workers: int = 0
    """DataLoader worker processes (0 decodes on the main process)."""
    cache_images: bool = True
    """Decode every image once and keep them in memory (small data sets)."""
    seed: int = 0
    """Seed of the shuffling, the flips and the replacement of unreadable images."""
    hflip: bool = False
    """Flip each real image horizontally with probability 1/2."""
    warn_every: int = 1000
    """Report newly skipped unreadable files at most once per this many steps."""
    max_unreadable_batches: int = 10
    """Give up with an error after this many consecutive batches without a single readable image."""
    run_class_index: tyro.conf.Suppress[Optional[Path]] = None
    """The ``class_index.json`` of the run these settings trained (recorded in config.yml by training): when the
    data folder is missing outside training, the generator is shown with its classes and resolution."""


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
        self.train_dataset: ClassImageDataset | ClassIndexDataset
        try:
            self.train_dataparser_outputs = self.dataparser.get_dataparser_outputs(split="train")
        except DataNotFound as missing:
            self.train_dataparser_outputs = self._outputs_without_data(missing)
            self.train_dataset = ClassIndexDataset(self.train_dataparser_outputs)
        else:
            self.train_dataset = ClassImageDataset(
                self.train_dataparser_outputs,
                resolution=config.resolution,
                cache_images=config.cache_images and test_mode != "inference",
            )
        self.eval_dataset = None
        self._iterator: Iterator | None = None
        self.rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else local_rank
        self._unreadable: Dict[int, str] = dict(getattr(self.train_dataset, "cache_errors", {}))
        self._reported = 0
        self._last_report_step: Optional[int] = None
        super().__init__()

    def _outputs_without_data(self, missing: DataNotFound) -> DataparserOutputs:
        """The run's class index in place of the missing data folder, outside training only (else ``missing``)."""
        index_path = self.config.run_class_index
        if self.test_mode == "val" or index_path is None:
            raise missing
        if not Path(index_path).is_file():
            raise UserError(
                f"data folder {missing.folder} does not exist, and neither does {index_path}, the run's class index "
                f"that shows the generator without the data; restore one of them"
            )
        bound = float(getattr(self.config.dataparser, "scene_bound", 1.0))
        scene_box = SceneBox(aabb=torch.tensor([[-bound] * 3, [bound] * 3], dtype=torch.float32))
        outputs = class_index_outputs(read_class_index(Path(index_path).parent), scene_box)
        CONSOLE.print(
            f"[yellow]Data folder {missing.folder} not found: showing the generator without it "
            f"({len(outputs.metadata['class_names'])} classes at {outputs.metadata['resolution']} px from {index_path})",
            soft_wrap=True,
        )
        return outputs

    @property
    def without_data(self) -> bool:
        """Whether the data folder is missing and the training set is the run's class index (no images)."""
        return isinstance(self.train_dataset, ClassIndexDataset)

    @property
    def skipped_files(self) -> int:
        """Number of distinct files that could not be decoded so far (each replaced, never trained on)."""
        return len(self._unreadable)

    def setup_train(self) -> None:
        self.sampler = StepBatchSampler(
            len(self.train_dataset), self.config.batch_size, self.config.seed, self.rank, self.world_size
        )
        self.train_dataloader = DataLoader(
            self.train_dataset,
            batch_sampler=self.sampler,
            generator=torch.Generator().manual_seed(self.config.seed),  # keep the global RNG untouched
            num_workers=self.config.num_workers,
            pin_memory=str(self.device).startswith("cuda"),
        )

    def skip_to_step(self, step: int) -> None:
        """Continue the data stream at ``step`` (resuming a run)."""
        self.sampler.start_step = step
        self._iterator = None

    def setup_eval(self) -> None:
        """No held-out split: GAN evaluation compares generated images with the training images."""

    def _next_batch(self) -> Dict:
        if self._iterator is None:
            self._iterator = iter(self.train_dataloader)
        return next(self._iterator)

    def _readable_batch(self) -> Dict:
        """The next batch with at least one readable image; unreadable files are recorded."""
        for _ in range(self.config.max_unreadable_batches):
            batch = self._next_batch()
            valid = batch["valid"]
            for idx, ok, error in zip(batch["image_idx"].tolist(), valid.tolist(), batch["error"]):
                if not ok:
                    self._unreadable.setdefault(idx, error)
            if valid.any():
                return batch
        last = next(reversed(self._unreadable.values()), "")
        raise UserError(
            f"no readable image in {self.config.max_unreadable_batches} consecutive batches from {self.get_datapath()} "
            f"({self.skipped_files} unreadable files, e.g. {last}); check the data folder"
        )

    def next_train(self, step: int) -> Dict[str, Tensor]:  # type: ignore[override]
        self.train_count += 1
        generator = torch.Generator().manual_seed((self.config.seed * 1_000_003 + step) * 4099 + self.rank)
        batch = self._readable_batch()
        image, label, valid = batch["image"], batch["label"], batch["valid"]
        if not valid.all():
            readable = valid.nonzero()[:, 0]
            substitute = readable[torch.randint(len(readable), (len(valid),), generator=generator)]
            index = torch.where(valid, torch.arange(len(valid)), substitute)
            image, label = image[index], label[index]
        if self.config.hflip:
            flip = torch.rand(len(image), generator=generator) < 0.5
            image = torch.where(flip[:, None, None, None], image.flip(2), image)
        self._report_unreadable(step)
        return {
            "image": image.permute(0, 3, 1, 2).to(self.device, non_blocking=True),
            "label": label.to(self.device),
        }

    def _report_unreadable(self, step: int) -> None:
        if self.skipped_files == self._reported:
            return
        if self._last_report_step is not None and step - self._last_report_step < self.config.warn_every:
            return
        example = next(reversed(self._unreadable.values()))
        CONSOLE.print(f"[yellow]Skipped {self.skipped_files} unreadable image file(s) so far, latest: {example}")
        self._reported = self.skipped_files
        self._last_report_step = step

    def get_train_rays_per_batch(self) -> int:
        """Pixels per batch (nerfstudio reports them as rays/s)."""
        return self.config.batch_size * self.config.resolution**2

    def get_datapath(self) -> Path:
        """The data folder (the run folder when the data is missing: the viewer keeps its camera paths there)."""
        if self.without_data:
            return Path(self.config.run_class_index).parent  # type: ignore[arg-type]
        return Path(self.train_dataparser_outputs.metadata.get("root", self.config.dataparser.data))

    def get_param_groups(self) -> Dict[str, list]:
        return {}
