"""A run's config.yml is read without executing anything: the dataclasses ns-train writes come back equal, every
other Python tag is refused with one line naming the file, the line and the tag, and nothing it names runs."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from triplane_gan_ns import registry
from triplane_gan_ns.errors import UserError
from triplane_gan_ns.runs import load_config

TRIPLANE_GAN = str(Path(sys.executable).with_name("triplane-gan"))
REFUSAL = (
    "config {path} line {line}: tag {tag} is not allowed; a run config may only contain dataclasses of "
    + ", ".join(sorted({"nerfstudio", "tyro", "triplane_gan_ns"} | registry.plugin_packages()))
    + "; remove that line or do not use this run"
)


def _preset_text(name: str = "triplane_gan_tiny") -> str:
    from triplane_gan_ns.method_configs import triplane_gan

    return yaml.dump(getattr(triplane_gan, name).config)


def _with_line(text: str, old: str, new: str) -> tuple[str, int]:
    """``text`` with its line ``old`` (unique) replaced by ``new``, and the 1-based number of that line."""
    lines = text.splitlines()
    assert lines.count(old) == 1, old
    index = lines.index(old)
    lines[index] = new
    return "\n".join(lines) + "\n", index + 1


def test_a_trained_run_config_reads_back_equal(trained_tiny_run):
    path = trained_tiny_run / "config.yml"
    config = load_config(path)
    assert type(config).__name__ == "GanTrainerConfig"
    assert config == yaml.load(path.read_text(), Loader=yaml.Loader)
    assert yaml.dump(config) == path.read_text()  # every field, tuple, path, enum and class reference
    assert config.pipeline.model.generator.backbone._target.__name__ == "StyleGAN2Backbone"
    assert config.optimizers["generator"]["optimizer"]._target.__name__ == "Adam"


@pytest.mark.parametrize(
    "preset", ["triplane_gan_tiny", "triplane_gan_tiny_long", "triplane_gan", "triplane_gan_shapenet"]
)
def test_every_preset_round_trips(preset, tmp_path):
    from triplane_gan_ns.method_configs import triplane_gan

    path = tmp_path / "config.yml"
    path.write_text(_preset_text(preset))
    config = load_config(path)
    assert config == getattr(triplane_gan, preset).config
    assert config is not getattr(triplane_gan, preset).config


# (line of the tiny preset's dump to replace, its replacement with MARKER for the marker file, refused tag)
ATTACKS = {
    "os.system via object/apply": (
        "experiment_name: null",
        'experiment_name: !!python/object/apply:os.system ["touch MARKER"]',
        "!!python/object/apply:os.system",
    ),
    "subprocess.Popen via object/new": (
        "experiment_name: null",
        "experiment_name: !!python/object/new:subprocess.Popen [[touch, MARKER]]",
        "!!python/object/new:subprocess.Popen",
    ),
    "builtins.eval via name": (
        "project_name: nerfstudio-project",
        "project_name: !!python/name:builtins.eval ''",
        "!!python/name:builtins.eval",
    ),
    "builtins.eval via object/apply": (
        "project_name: nerfstudio-project",
        "project_name: !!python/object/apply:builtins.eval [\"__import__('os').system('touch MARKER')\"]",
        "!!python/object/apply:builtins.eval",
    ),
    "class of another module via object": (
        "machine: !!python/object:nerfstudio.configs.base_config.MachineConfig",
        "machine: !!python/object:argparse.Namespace",
        "!!python/object:argparse.Namespace",
    ),
    "nested field": (
        "      data: !!python/object/apply:pathlib.PosixPath []",
        "      data: !!python/object/apply:subprocess.check_call [[touch, MARKER]]",
        "!!python/object/apply:subprocess.check_call",
    ),
    "function of an allowed package via object/apply": (
        "experiment_name: null",
        "experiment_name: !!python/object/apply:triplane_gan_ns.training.trainer.atomic_write [MARKER, null]",
        "!!python/object/apply:triplane_gan_ns.training.trainer.atomic_write",
    ),
    "module re-exported by an allowed package via name": (
        "project_name: nerfstudio-project",
        "project_name: !!python/name:triplane_gan_ns.runs.yaml ''",
        "!!python/name:triplane_gan_ns.runs.yaml",
    ),
    "non-dataclass of an allowed package via object": (
        "machine: !!python/object:nerfstudio.configs.base_config.MachineConfig",
        "machine: !!python/object:triplane_gan_ns.model.TriplaneGANModel",
        "!!python/object:triplane_gan_ns.model.TriplaneGANModel",
    ),
    "torch function via name": (
        "project_name: nerfstudio-project",
        "project_name: !!python/name:torch.load ''",
        "!!python/name:torch.load",
    ),
    "non-python tag": (
        "experiment_name: null",
        "experiment_name: !custom [touch, MARKER]",
        "!custom",
    ),
}


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_other_tags_are_refused_with_file_line_and_tag(attack, tmp_path):
    old, new, tag = ATTACKS[attack]
    marker = tmp_path / "marker"
    text, line = _with_line(_preset_text(), old, new.replace("MARKER", str(marker)))
    path = tmp_path / "config.yml"
    path.write_text(text)
    assert yaml.compose(text, Loader=yaml.SafeLoader) is not None  # well-formed: what is refused is the tag

    with pytest.raises(UserError) as refused:
        load_config(path)
    assert str(refused.value) == REFUSAL.format(path=path, line=line, tag=tag)
    assert "\n" not in str(refused.value)
    assert not marker.exists()


def test_a_refused_module_is_not_even_imported(tmp_path, monkeypatch):
    marker = tmp_path / "imported"
    (tmp_path / "evil_module.py").write_text(f"open({str(marker)!r}, 'w').close()\nclass Config:\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    text, line = _with_line(
        _preset_text(),
        "machine: !!python/object:nerfstudio.configs.base_config.MachineConfig",
        "machine: !!python/object:evil_module.Config",
    )
    (tmp_path / "config.yml").write_text(text)
    with pytest.raises(UserError, match=f"line {line}: tag !!python/object:evil_module.Config is not allowed"):
        load_config(tmp_path / "config.yml")
    assert not marker.exists() and "evil_module" not in sys.modules


def test_registered_component_packages_are_allowed(install_plugin, tmp_path):
    """The dataclasses of a package that registers a component (entry points) load; an unregistered one not."""
    source = (
        "from dataclasses import dataclass, field\n"
        "from typing import Type\n"
        "from nerfstudio.configs.base_config import InstantiateConfig\n"
        "class MyBackbone:\n    pass\n"
        "@dataclass\n"
        "class MyBackboneConfig(InstantiateConfig):\n"
        "    _target: Type = field(default_factory=lambda: MyBackbone)\n"
        "    width: int = 3\n"
    )
    install_plugin(
        "my-backbones", {"my_backbones/__init__.py": "", "my_backbones/config.py": source},
        {"triplane_gan_ns.backbones": {"my-backbone": "my_backbones.config:MyBackboneConfig"}},
    )
    install_plugin("not-a-plugin", {"unregistered/__init__.py": source}, {})
    from my_backbones.config import MyBackboneConfig

    path = tmp_path / "config.yml"
    path.write_text(yaml.dump({"backbone": MyBackboneConfig(width=5)}))
    assert load_config(path) == {"backbone": MyBackboneConfig(width=5)}

    from unregistered import MyBackboneConfig as Unregistered

    path.write_text(yaml.dump({"backbone": Unregistered(width=5)}))
    with pytest.raises(UserError, match="line 1: tag !!python/object:unregistered.MyBackboneConfig is not allowed"):
        load_config(path)


def test_render_refuses_a_config_that_would_run_a_command(trained_tiny_run, tmp_path):
    run = tmp_path / "shared-run"
    shutil.copytree(trained_tiny_run, run)
    marker = tmp_path / "pwned"
    config = run / "config.yml"
    payload = f'experiment_name: !!python/object/apply:os.system ["touch {marker}"]'
    text, line = _with_line(config.read_text(), "experiment_name: tiny", payload)
    config.write_text(text)

    result = subprocess.run(
        [TRIPLANE_GAN, "render", "--load-config", str(config), "--output-dir", str(tmp_path / "renders")],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode != 0
    errors = [l for l in result.stderr.splitlines() if l.startswith("error:")]
    assert errors == [
        "error: " + REFUSAL.format(path=config, line=line, tag="!!python/object/apply:os.system")
    ], result.stderr[-2000:]
    assert "Traceback" not in result.stderr + result.stdout
    assert not marker.exists()
    assert not (tmp_path / "renders").exists() or not any((tmp_path / "renders").iterdir())
