"""The package's imports point down the layers of docs/architecture.md: no module imports a higher layer, the tools
never import training or one another, and the components of one kind never import another kind's."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, List, Set, Tuple

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "triplane_gan_ns"

# Bottom to top; a module may import its own layer and the ones below it.
LAYERS: List[Set[str]] = [
    {"", "allocator", "errors", "fileio", "registry"},  # the package root and the plumbing every layer uses
    {"layers", "cameras", "occupancy", "renderer", "surface", "texture", "pretrained"},  # building blocks
    {"backbones", "fields", "pose_samplers", "discriminators", "superresolution", "data"},  # components, data
    {"generator"},
    {"model", "viewer_controls", "alignment"},
    {"runs", "latents"},  # the run folder and the latents of a trained generator
    {"training", "export", "eval", "pti", "viewer"},  # training | the tools
    {"cli", "method_configs"},
]
TOOLS = {"export", "eval", "pti", "viewer"}
COMPONENTS = {"backbones", "fields", "pose_samplers", "discriminators"}


def _part(module: str) -> str:
    """The first name below ``triplane_gan_ns`` ("" for the package itself)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _rank(part: str) -> int:
    for rank, layer in enumerate(LAYERS):
        if part in layer:
            return rank
    raise AssertionError(f"triplane_gan_ns.{part} is in no layer of {__file__}: add it where it belongs")


def _imports() -> Dict[str, List[Tuple[str, int]]]:
    """Every ``triplane_gan_ns`` import of every module of the package, with its line (also the ones inside
    functions and under ``TYPE_CHECKING``: a lazy import is still a dependency)."""
    found: Dict[str, List[Tuple[str, int]]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        targets = []
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                if node.module == "triplane_gan_ns":  # ``from triplane_gan_ns import a, b``: modules a and b
                    targets += [(f"{node.module}.{a.name}", node.lineno) for a in node.names]
                elif node.module.startswith("triplane_gan_ns."):
                    targets.append((node.module, node.lineno))
            elif isinstance(node, ast.Import):
                targets += [(a.name, node.lineno) for a in node.names if a.name.startswith("triplane_gan_ns")]
            elif isinstance(node, ast.ImportFrom) and node.level > 0:
                raise AssertionError(f"{path}:{node.lineno}: use absolute imports")
        found[module] = targets
    return found


def _violations() -> List[str]:
    bad = []
    for module, targets in _imports().items():
        source = _part(module)
        for target, line in targets:
            goal = _part(target)
            where = f"{module} (line {line}) imports {target}"
            if goal == source:
                continue
            if _rank(goal) > _rank(source):
                bad.append(f"{where}: a higher layer")
            elif source in TOOLS and goal == "training":
                bad.append(f"{where}: a tool must not depend on how the generator was trained")
            elif source in TOOLS and goal in TOOLS:
                bad.append(f"{where}: tools do not import each other; move the shared part down a layer")
            elif source in COMPONENTS and goal in COMPONENTS:
                bad.append(f"{where}: components of one kind do not import another kind's")
    return bad


def test_imports_point_down_the_layers():
    assert _violations() == []


def test_every_module_is_in_a_layer():
    for module in _imports():
        _rank(_part(module))


@pytest.mark.parametrize(
    "source, text, expected",
    [
        ("export/extra.py", "from triplane_gan_ns.cli.main import COMMANDS\n", "a higher layer"),
        ("model_extra.py", "from triplane_gan_ns.runs import load_model\n", None),
        ("eval/extra.py", "from triplane_gan_ns.training import losses\n", "how the generator was trained"),
        ("pti/extra.py", "import triplane_gan_ns.export.mesh\n", "tools do not import each other"),
        ("fields/extra.py", "from triplane_gan_ns.backbones.stylegan2 import MappingNetwork\n", "another kind's"),
        ("data/extra.py", "from triplane_gan_ns.generator import TriplaneGenerator\n", "a higher layer"),
        ("fields/extra.py", "from triplane_gan_ns import errors, runs\n", "a higher layer"),
    ],
)
def test_the_walk_finds_each_kind_of_wrong_arrow(tmp_path, monkeypatch, source, text, expected):
    """The same walk on a copy of the package with one wrong import added reports it (a module outside every
    layer is reported too)."""
    import shutil

    copy = tmp_path / "triplane_gan_ns"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    (copy / source).write_text(text)
    monkeypatch.setitem(globals(), "PACKAGE", copy)
    if expected is None:
        with pytest.raises(AssertionError, match="is in no layer"):
            _violations()
    else:
        found = _violations()
        assert len(found) == 1 and expected in found[0], found
