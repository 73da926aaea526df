"""``triplane-gan``: one command with a subcommand per tool, e.g. ``triplane-gan prepare-dataset SRC DEST``.

Each subcommand is a module of ``cli/`` named after it, holding a dataclass whose fields are its options and whose
``main()`` passes them to the library function that does the work; add it to ``COMMANDS``.  A ``UserError``
raised by any subcommand prints as one ``error: ...`` line.
"""

from __future__ import annotations

from typing import Dict

import tyro

from triplane_gan_ns.allocator import keep_freed_memory
from triplane_gan_ns.cli.eval import Evaluate
from triplane_gan_ns.cli.export_mesh import ExportMesh
from triplane_gan_ns.cli.invert import Invert
from triplane_gan_ns.cli.prepare_dataset import PrepareDataset
from triplane_gan_ns.cli.render import RenderLatents
from triplane_gan_ns.cli.viewer import ViewRun
from triplane_gan_ns.errors import install_excepthook

COMMANDS: Dict[str, type] = {
    "prepare-dataset": PrepareDataset,
    "render": RenderLatents,
    "export-mesh": ExportMesh,
    "invert": Invert,
    "eval": Evaluate,
    "viewer": ViewRun,
}


def entrypoint() -> None:
    """Parse the command line and run the chosen subcommand."""
    install_excepthook()
    keep_freed_memory()
    command = tyro.extras.subcommand_cli_from_dict(
        COMMANDS, description="Tools for triplane-gan-ns (train with ns-train triplane-gan)."
    )
    command.main()


if __name__ == "__main__":
    entrypoint()
