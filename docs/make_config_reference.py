"""Writes docs/configuration.md, the option reference of the ns-train presets, from their config dataclasses.

    .venv/bin/python docs/make_config_reference.py          # rewrites docs/configuration.md
    .venv/bin/python docs/make_config_reference.py OUT.md   # writes OUT.md instead

Lists the options this package adds, with each preset's default and the field's docstring (what tyro shows in
``--help``).  tests/test_docs.py fails when the committed page differs from a fresh run.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import sys
import textwrap
from importlib.metadata import entry_points
from pathlib import Path
from typing import Dict, List, Tuple

from nerfstudio.data.datamanagers.base_datamanager import DataManagerConfig
from nerfstudio.data.dataparsers.base_dataparser import DataParserConfig
from nerfstudio.engine.trainer import TrainerConfig
from nerfstudio.models.base_model import ModelConfig
from nerfstudio.pipelines.base_pipeline import VanillaPipelineConfig

from triplane_gan_ns import registry
from triplane_gan_ns.data.datamanager import DATAPARSERS
from triplane_gan_ns.method_configs.triplane_gan import (
    triplane_gan,
    triplane_gan_shapenet,
    triplane_gan_tiny,
    triplane_gan_tiny_long,
)

PRESETS = {"triplane-gan": triplane_gan.config, "triplane-gan-shapenet": triplane_gan_shapenet.config,
           "triplane-gan-tiny": triplane_gan_tiny.config, "triplane-gan-tiny-long": triplane_gan_tiny_long.config}
NERFSTUDIO_BASES = (TrainerConfig, VanillaPipelineConfig, DataManagerConfig, ModelConfig, DataParserConfig)
# nerfstudio's own fields are in `ns-train --help`; the optimizers are listed because their classes are ours
NERFSTUDIO_FIELDS = {f.name for base in NERFSTUDIO_BASES for f in dataclasses.fields(base)} - {"optimizers"}


def own_components(kind: str) -> Dict[str, type]:
    """{name: config class} of the components this package registers (other installed plugins are left out)."""
    names = {ep.name for ep in entry_points(group=registry.KINDS[kind]) if ep.dist and ep.dist.name == "triplane-gan-ns"}
    return {name: registry.config_class(kind, name) for name in sorted(names)}


# config paths chosen by name (tyro subcommands): title, {name: config class}, flag prefix (dataparser: none)
COMPONENTS = {
    "pipeline.datamanager.dataparser": ("Dataparsers", {n: type(c) for n, c in DATAPARSERS.items()}, ""),
    **{path: (kind.replace("_", " ").capitalize(), own_components(kind), path)
       for path, kind in (("pipeline.model.generator.backbone", "backbones"), ("pipeline.model.generator.field", "fields"),
                          ("pipeline.model.discriminator", "discriminators"), ("pipeline.model.pose_sampler", "pose_samplers"))},
}
Row = Tuple[str, str, str]  # flag, type, docstring
Section = Tuple[str, type, List[Row]]  # config path, class, rows


def field_docs(cls: type) -> Dict[str, str]:
    """Attribute docstrings (a string literal right after an annotated field) of ``cls`` and its bases."""
    docs: Dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        try:
            body = ast.parse(textwrap.dedent(inspect.getsource(klass))).body[0].body
        except (OSError, TypeError, IndexError, AttributeError):
            continue
        for node, nxt in zip(body, body[1:]):
            if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and isinstance(nxt, ast.Expr)
                    and isinstance(nxt.value, ast.Constant) and isinstance(nxt.value.value, str)):
                docs[node.target.id] = " ".join(inspect.cleandoc(nxt.value.value).split())
    return docs


def listed(cls: type, name: str) -> bool:
    """Fields we declare (or re-declare); not ``_target``, not nerfstudio's own, not hidden from the command line
    (``tyro.conf.Suppress``: written by training, not set by users)."""
    if name.startswith("_"):
        return False
    if "Suppress[" in str(next(f.type for f in dataclasses.fields(cls) if f.name == name)):
        return False
    return name not in NERFSTUDIO_FIELDS or any(
        name in vars(c).get("__annotations__", {}) for c in cls.__mro__ if not c.__module__.startswith("nerfstudio"))


def walk(cfg, path: str, flag_prefix: str, values: Dict[str, object], sections: List[Section], chosen: Dict[str, object]):
    """Collect the listed fields of ``cfg`` (recursively) into ``sections`` and their values into ``values``;
    component configs (subcommands) go to ``chosen`` instead."""
    docs, rows = field_docs(type(cfg)), []
    sections.append((path, type(cfg), rows))
    for f in dataclasses.fields(cfg):
        if not listed(type(cfg), f.name):
            continue
        value, sub = getattr(cfg, f.name), ".".join(p for p in (path, f.name) if p)
        flag = ".".join(p for p in (flag_prefix, f.name) if p)
        if sub in COMPONENTS:
            chosen[sub] = value
        elif dataclasses.is_dataclass(value) and not type(value).__module__.startswith("nerfstudio"):
            walk(value, sub, flag, values, sections, chosen)
        elif isinstance(value, dict):  # optimizers: {"generator": {"optimizer": config, "scheduler": None}}
            for key, group in value.items():
                for part, item in group.items():
                    if dataclasses.is_dataclass(item):
                        walk(item, f"{sub}.{key}.{part}", f"{flag}.{key}.{part}", values, sections, chosen)
        elif not dataclasses.is_dataclass(value):  # nerfstudio's nested configs (logging) are left out
            rows.append(("--" + flag.replace("_", "-"), str(f.type), docs.get(f.name, "")))
            values[rows[-1][0]] = value


def fmt(value) -> str:
    if isinstance(value, tuple):
        return " ".join(fmt(v) for v in value) if value else "()"
    return str(value)


def cell(text: str) -> str:
    return text.replace("``", "`").replace("|", "\\|")


def summary(cls: type) -> str:
    """First paragraph of the class docstring, as one table-safe line."""
    return cell((inspect.getdoc(cls) or "").split("\n\n")[0].replace("\n", " "))


def table(sections: List[Section], defaults: Dict[str, Dict[str, object]], title) -> List[str]:
    lines = []
    for path, cls, rows in sections:
        if not rows:
            continue
        lines += ["", title(path, cls), "", summary(cls), "",
                  "| flag | type | " + " | ".join(f"`{p}`" for p in PRESETS) + " | description |",
                  "| --- | --- |" + " --- |" * len(PRESETS) + " --- |"]
        for flag, typ, doc in rows:
            presets = " | ".join(f"`{cell(fmt(defaults[p][flag]))}`" if flag in defaults[p] else "—" for p in PRESETS)
            lines.append(f"| `{flag}` | `{cell(typ)}` | {presets} | {cell(doc)} |")
    return lines


def reference() -> Tuple[List[Section], Dict[str, Dict[str, List[Section]]], str]:
    """(option sections of the presets, {component path: {choice: sections}}, the Markdown page)."""
    defaults, chosen, layouts = {}, {}, []
    for preset, config in PRESETS.items():  # the presets differ in values, not in layout
        defaults[preset], chosen[preset] = {}, {}
        layouts.append([])
        walk(config, "", "", defaults[preset], layouts[-1], chosen[preset])
    sections = layouts[0]
    lines = [
        "# Configuration reference",
        "",
        "Generated by `docs/make_config_reference.py` from the config dataclasses; do not edit by hand",
        "(`tests/test_docs.py` fails when this page is stale). It lists the options this package adds, with the",
        "default of each preset; nerfstudio's own options (`--max-num-iterations`, `--mixed-precision`, `--vis`,",
        "`--load-dir`, `--machine.*`, `--logging.*`, `--viewer.*`) are in `ns-train triplane-gan --help`.",
        "",
        "Components are chosen by name, as positional subcommands in this order: dataparser, backbone, field,",
        "discriminator, pose sampler (any of them may be left out to keep the preset's). A component's options",
        "follow its name, and the preset's own options come before the first name:",
        "",
        "```bash",
        "ns-train triplane-gan --max-num-iterations 100000 --pipeline.r1-gamma 2 \\",
        "    triplane-gan-imagenet --data /datasets/imagenet-128 --classes n01440764 n02102040 \\",
        "    stylegan2-triplane --pipeline.model.generator.backbone.plane-resolution 128",
        "```",
        "",
        "A component other than the preset's starts from its registered defaults, not from the preset's sizes:",
        "`ns-train triplane-gan-tiny stylegan2-eg3d` builds a paper-size backbone (z 512, planes 3×32×256²) unless",
        "its options are set too. The columns below show what each preset starts from.",
        "",
        "## Registered components",
        "",
        "The components of this package; `ns-train triplane-gan --help` also lists those of other installed",
        "packages ([custom-components.md](custom-components.md) shows how to write one).",
        "",
        "| kind | name | config class | description |",
        "| --- | --- | --- | --- |",
    ]
    for title, choices, _ in COMPONENTS.values():
        for name, cls in choices.items():
            lines.append(f"| {title.lower()[:-1]} | `{name}` | `{cls.__module__}.{cls.__name__}` | {summary(cls)} |")
    lines += ["", "## Options of the presets"]
    lines += table(sections, defaults, lambda path, cls: f"### `{path or 'trainer'}` ({cls.__name__})")
    components: Dict[str, Dict[str, List[Section]]] = {}
    for path, (title, choices, prefix) in COMPONENTS.items():
        lines += ["", f"## {title} (`{path}`)"]
        components[path] = {}
        for name, cls in choices.items():
            values, parts = {}, []
            for preset in PRESETS:  # the preset's own instance when it uses this class, else the class defaults
                picked = chosen[preset][path]
                values[preset], parts = {}, []
                walk(picked if type(picked) is cls else cls(), path, prefix, values[preset], parts, {})
            components[path][name] = parts
            lines += table(parts, values, lambda p, c, name=name: f"### `{name}` ({c.__name__})" if p == path
                           else f"#### `{name}`: `{p}` ({c.__name__})")
    return sections, components, "\n".join(lines) + "\n"


def main(out: Path = Path(__file__).with_name("configuration.md")) -> None:
    out.write_text(reference()[2])
    print(f"wrote {out}")


if __name__ == "__main__":
    main(*(Path(arg) for arg in sys.argv[1:2]))
