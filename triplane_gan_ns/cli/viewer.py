"""``triplane-gan viewer``: its options, passed to ``viewer.serve.view_run``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from nerfstudio.configs.base_config import ViewerConfig

from triplane_gan_ns.viewer.serve import loopback_viewer_config, view_run


@dataclass
class ViewRun:
    """Open a trained run in nerfstudio's viewer (on 127.0.0.1; pass --viewer.websocket-host 0.0.0.0 to let
    other machines connect).  Works without the run's training data: it needs config.yml, class_index.json and
    a checkpoint."""

    load_config: Path
    """config.yml of a training run."""
    checkpoint: Optional[Path] = None
    """A specific checkpoint of the run (default: the latest)."""
    viewer: ViewerConfig = field(default_factory=loopback_viewer_config)
    """Viewer settings; websocket-host is the address it listens on."""
    device: str = "auto"
    """Device to render on (auto: cuda when available)."""

    def main(self) -> None:
        view_run(self.load_config, checkpoint=self.checkpoint, viewer=self.viewer, device=self.device)
