"""The terminal progress table of a GAN run: iteration time, images/s and ETA instead of nerfstudio's rays/s.

nerfstudio's ``LocalWriter`` prints the events named in ``stats_to_track``; this writer also prints
``Train Images / Sec`` (real images shown to the discriminator per second, summed over ranks), which the
trainer reports every step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Tuple, Type

from nerfstudio.configs.base_config import LocalWriterConfig
from nerfstudio.utils.writer import EventName, LocalWriter

IMAGES_PER_SEC = "Train Images / Sec"


class GanLocalWriter(LocalWriter):
    """nerfstudio's terminal writer that also tracks events named by plain strings."""

    config: "GanLocalWriterConfig"

    def __init__(self, config: "GanLocalWriterConfig", banner_messages: Optional[List[str]] = None):
        super().__init__(config, banner_messages)
        self.stats_to_track = self.stats_to_track + list(config.extra_stats)


@dataclass
class GanLocalWriterConfig(LocalWriterConfig):
    """Terminal progress table: iteration time, images/s, ETA."""

    _target: Type = field(default_factory=lambda: GanLocalWriter)
    enable: bool = True
    stats_to_track: Tuple[EventName, ...] = (EventName.ITER_TRAIN_TIME, EventName.ETA)
    extra_stats: Tuple[str, ...] = (IMAGES_PER_SEC,)
    """Further events to print, by name."""
