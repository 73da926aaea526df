"""``triplane-gan viewer`` (``view_run``): a trained run in nerfstudio's viewer, listening on 127.0.0.1 unless told
otherwise.

What ``ns-viewer --load-config`` does, with three differences: the run's ``config.yml`` is read with
``runs.load_config`` (it executes nothing) and the checkpoint with ``weights_only=True``; checkpoints and
``class_index.json`` are found next to ``config.yml`` (wherever the command is started); and the viewer binds
127.0.0.1, where ``ns-viewer`` binds 0.0.0.0 (every network interface).  ``--viewer.websocket-host 0.0.0.0``
exposes it on purpose.  The address and port actually bound are printed (the port is the next free one if the
asked one is taken).  Without the run's data folder the generator is shown all the same, with the classes and
resolution of ``class_index.json`` (the datamanager's fallback, as with ``ns-viewer``).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Optional

from nerfstudio.configs.base_config import ViewerConfig

from triplane_gan_ns.latents import resolve_device
from triplane_gan_ns.runs import CLASS_INDEX, latest_checkpoint, read_run_config
from triplane_gan_ns.runs import load_checkpoint_file

LOOPBACK = "127.0.0.1"


def loopback_viewer_config() -> ViewerConfig:
    """nerfstudio's viewer settings, listening on 127.0.0.1 only."""
    return ViewerConfig(websocket_host=LOOPBACK)


def view_run(
    load_config: Path,
    checkpoint: Optional[Path] = None,
    viewer: Optional[ViewerConfig] = None,
    device: str = "auto",
) -> None:
    """Serve the run of ``load_config`` (its ``checkpoint``, default the latest) in nerfstudio's viewer until
    interrupted (Ctrl-C), as ``triplane-gan viewer`` does; ``viewer`` defaults to nerfstudio's settings
    listening on 127.0.0.1."""
    # imported here: nerfstudio's viewer pulls in every nerfstudio method, which every other command
    # (and every error message) would otherwise wait for
    from nerfstudio.utils import writer
    from nerfstudio.viewer.viewer import Viewer

    config = read_run_config(load_config)
    run_dir = Path(load_config).parent
    state = load_checkpoint_file(Path(checkpoint) if checkpoint else latest_checkpoint(run_dir))
    config.pipeline.datamanager.run_class_index = run_dir / CLASS_INDEX  # where the run is now
    pipeline = config.pipeline.setup(device=resolve_device(device), test_mode="test")
    pipeline.eval()
    pipeline.load_pipeline(state["pipeline"], state["step"])

    viewer_config = viewer if viewer is not None else loopback_viewer_config()
    server = Viewer(
        viewer_config,
        log_filename=run_dir / viewer_config.relative_log_filename,
        datapath=pipeline.datamanager.get_datapath(),
        pipeline=pipeline,
        share=viewer_config.make_share_url,
        train_lock=threading.Lock(),
    )
    config.logging.local_writer.enable = False
    writer.setup_local_writer(config.logging, max_iter=config.max_num_iterations)  # the viewer reads its buffer
    server.init_scene(
        train_dataset=pipeline.datamanager.train_dataset,
        train_state="completed",
        eval_dataset=pipeline.datamanager.eval_dataset,
    )
    server.update_scene(step=state["step"])

    host, port = server.viser_server.get_host(), server.viser_server.get_port()
    reach = "this machine only" if host in (LOOPBACK, "localhost", "::1") else "other machines can connect"
    url_host = LOOPBACK if host in ("0.0.0.0", "::") else host
    print(f"Viewer listening on {host}:{port} ({reach}): open http://{url_host}:{port}", flush=True)
    try:
        while True:
            time.sleep(1.0)
    except KeyboardInterrupt:
        pass
