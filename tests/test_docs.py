"""The documentation cannot go stale: the configuration reference is regenerated and its flags are checked
against ns-train's own help; the custom pose sampler of docs/custom-components.md is installed and used."""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import io
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from triplane_gan_ns import registry

try:
    import tomllib
except ImportError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

DOCS = Path(__file__).resolve().parents[1] / "docs"
EXAMPLES = DOCS / "examples"


@functools.lru_cache(maxsize=None)
def _load_script():
    spec = importlib.util.spec_from_file_location("make_config_reference", DOCS / "make_config_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@functools.lru_cache(maxsize=None)
def _ns_train_help(*args: str) -> str:
    """``ns-train triplane-gan-tiny ARGS --help``, run in this process through ns-train's own entry point."""
    from nerfstudio.scripts import train

    old_argv, old_columns = sys.argv, os.environ.get("COLUMNS")
    sys.argv, os.environ["COLUMNS"] = ["ns-train", "triplane-gan-tiny", *args, "--help"], "400"
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_info:
            train.entrypoint()
    finally:
        sys.argv = old_argv
        if old_columns is None:
            os.environ.pop("COLUMNS")
        else:
            os.environ["COLUMNS"] = old_columns
    assert exit_info.value.code in (0, None), out.getvalue()[-2000:]
    return out.getvalue()


def _flags(help_text: str) -> set:
    return set(re.findall(r"(--[a-z0-9][a-z0-9.-]*)", help_text))


def test_configuration_reference_is_up_to_date(tmp_path):
    out = tmp_path / "configuration.md"
    _load_script().main(out)
    assert out.read_text() == (DOCS / "configuration.md").read_text(), (
        "docs/configuration.md is stale: run .venv/bin/python docs/make_config_reference.py"
    )


def test_every_listed_flag_is_accepted_by_ns_train():
    sections, components, page = _load_script().reference()
    listed = [row[0] for _, _, rows in sections for row in rows]
    assert {"--compile", "--pipeline.r1-gamma", "--pipeline.model.generator.neural-resolution"} <= set(listed)
    top = _flags(_ns_train_help())
    assert not set(listed) - top
    for path, choices in components.items():
        for name, parts in choices.items():
            assert f"`{name}`" in page
            flags = {row[0] for _, _, rows in parts for row in rows}
            assert flags, (path, name)
            assert not flags - _flags(_ns_train_help(name)), (path, name)


# ---- the worked example: a third-party pose sampler ---------------------------------------------------------


def test_custom_components_page_shows_the_example_files_verbatim():
    page = (DOCS / "custom-components.md").read_text()
    for name in ("ring_pose_sampler.py", "pyproject.toml"):
        assert (EXAMPLES / name).read_text().strip() in page, name


@pytest.fixture
def ring_plugin(install_plugin):
    """docs/examples installed as its pyproject.toml declares it: its modules and its entry points."""
    pyproject = tomllib.loads((EXAMPLES / "pyproject.toml").read_text())
    modules = pyproject["tool"]["setuptools"]["py-modules"]
    files = {f"{m}.py": (EXAMPLES / f"{m}.py").read_text() for m in modules}
    return install_plugin(pyproject["project"]["name"], files, pyproject["project"]["entry-points"])


def test_ring_sampler_is_found_by_name(ring_plugin):
    assert "ring" in registry.names("pose_samplers")
    cfg = registry.config("pose_samplers", "ring", elevation_degrees=30.0)
    assert type(cfg).__module__ == "ring_pose_sampler" and cfg.elevation_degrees == 30.0
    assert registry.name_of("pose_samplers", cfg) == "ring"


def test_ring_cameras_lie_on_the_ring(ring_plugin):
    n, radius, elevation = 3600, 2.7, 25.0
    sampler = registry.config("pose_samplers", "ring", radius=radius, elevation_degrees=elevation).setup()
    cameras = sampler.sample(n, 16, generator=torch.Generator().manual_seed(0))
    c2w = cameras.camera_to_worlds
    eye = c2w[:, :, 3]
    torch.testing.assert_close(eye.norm(dim=-1), torch.full((n,), radius))
    torch.testing.assert_close(torch.rad2deg(torch.asin(eye[:, 2] / radius)), torch.full((n,), elevation))
    # every camera looks at the centre (it looks down its local -z axis)
    torch.testing.assert_close(-c2w[:, :, 2], -eye / radius, atol=1e-5, rtol=0)
    # azimuths are uniform on the whole circle: 36 bins of 10 degrees, none far from n / 36, no gap > 2 degrees
    azimuth = torch.rad2deg(torch.atan2(eye[:, 1], eye[:, 0])) % 360
    counts = torch.histc(azimuth, bins=36, min=0, max=360)
    assert (counts - n / 36).abs().max() < 4 * math.sqrt(n / 36), counts
    ordered = azimuth.sort().values
    gaps = torch.cat([ordered.diff(), (ordered[:1] + 360) - ordered[-1:]])
    assert gaps.max() < 2.0
    # the draw is reproducible from the generator
    again = sampler.sample(n, 16, generator=torch.Generator().manual_seed(0)).camera_to_worlds
    assert torch.equal(again, c2w)


def test_ns_train_trains_one_step_with_the_ring_sampler(ring_plugin, tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ring_plugin), os.environ.get("PYTHONPATH")]))}
    ns_train = Path(sys.executable).with_name("ns-train")
    command = [
        str(ns_train), "triplane-gan-tiny", "--max-num-iterations", "1", "--output-dir", str(tmp_path),
        "--experiment-name", "ring", "--timestamp", "t", "--orbit-frames", "0", "--sample-grid-views", "1",
        "--pipeline.datamanager.resolution", "16", "--pipeline.model.generator.neural-resolution", "16",
        "--pipeline.model.generator.num-coarse-samples", "8", "--pipeline.model.generator.num-importance-samples", "8",
        "ring", "--pipeline.model.pose-sampler.elevation-degrees", "30",
    ]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    run = tmp_path / "ring" / "triplane-gan-tiny" / "t"
    config = (run / "config.yml").read_text()
    assert "ring_pose_sampler.RingPoseSamplerConfig" in config and "elevation_degrees: 30.0" in config
    from triplane_gan_ns.runs import load_config  # the safe reader accepts a registered plugin's dataclasses

    assert load_config(run / "config.yml").pipeline.model.pose_sampler.elevation_degrees == 30.0
    assert list((run / "nerfstudio_models").glob("step-*.ckpt"))
