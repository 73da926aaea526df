"""The compact archive: round trip against the raw folder, resume after an interruption, CLI errors, ns-train."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from photo_fixtures import CLASS_IDS, CLASS_NAMES, NUM_BAD, make_photo_tree
from triplane_gan_ns.data.dataset import ClassImageDataset, resize_square
from triplane_gan_ns.data.imagenet_dataparser import ImageFolderDataParserConfig
from triplane_gan_ns.data.prepare import prepare_dataset
from triplane_gan_ns.errors import UserError

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("photos")
    make_photo_tree(root)
    return root


@pytest.fixture(scope="module")
def archive_dir(photos, tmp_path_factory) -> Path:
    dest = tmp_path_factory.mktemp("archive")
    prepare_dataset(photos, dest, resolution=24, shard_size=4, workers=2)
    return dest


def _dataset(data: Path, resolution: int, **kwargs) -> ClassImageDataset:
    outputs = ImageFolderDataParserConfig(data=data, **kwargs).setup().get_dataparser_outputs(split="train")
    return ClassImageDataset(outputs, resolution=resolution)


def _shard_files(dest: Path) -> list:
    return sorted(p.name for p in dest.glob("*.npy"))


def test_archive_equals_raw_folder_pixel_for_pixel(photos, archive_dir):
    raw = _dataset(photos, 24)
    raw_items = [raw[i] for i in range(len(raw))]
    raw_valid = [item for item in raw_items if item["valid"]]
    packed = _dataset(archive_dir, 24)
    assert packed.is_archive and len(packed) == len(raw_valid) == len(raw) - NUM_BAD
    for i, expected in enumerate(raw_valid):
        item = packed[i]
        assert item["valid"] and torch.equal(item["image"], expected["image"]) and item["label"] == expected["label"]
    assert packed.class_names == CLASS_NAMES
    manifest = json.loads((archive_dir / "manifest.json").read_text())
    assert manifest["resolution"] == 24 and manifest["skipped"] == NUM_BAD and manifest["num_images"] == len(packed)
    assert sum(s["count"] for s in manifest["shards"]) == len(packed)
    assert sorted(s["file"] for s in manifest["skipped_files"]) == [
        "train/n00000001/bad_text.JPEG", "train/n00000002/f.JPEG", "train/n00000002/g.JPEG"
    ]
    index = json.loads((archive_dir / "class_index.json").read_text())
    assert index == {str(i): {"id": c, "name": n} for i, (c, n) in enumerate(zip(CLASS_IDS, CLASS_NAMES))}
    images = np.load(archive_dir / manifest["shards"][0]["images"], mmap_mode="r")
    assert images.dtype == np.uint8 and images.shape[1:] == (24, 24, 3)


def test_archive_at_another_resolution_and_subset(archive_dir):
    full = _dataset(archive_dir, 24)
    small = _dataset(archive_dir, 12)
    assert small[0]["image"].shape == (12, 12, 3)
    assert np.array_equal(small.get_numpy_image(3), resize_square(full.get_numpy_image(3), 12))
    subset = _dataset(archive_dir, 24, classes=("n00000003", "apple"), max_images_per_class=1)
    assert subset.metadata["class_ids"] == ["n00000002", "n00000003"] and subset.labels.tolist() == [0, 1]
    first_apple = full.labels.tolist().index(1)
    assert np.array_equal(subset.get_numpy_image(0), full.get_numpy_image(first_apple))


class _Interrupt(Exception):
    pass


def _interrupt_after_first_shard(index: int) -> None:
    raise _Interrupt(index)


def test_interrupted_run_resumes_without_rewriting_shards(photos, archive_dir, tmp_path):
    dest = tmp_path / "resumed"
    options = dict(resolution=24, shard_size=4, workers=0)
    with pytest.raises(_Interrupt):
        prepare_dataset(photos, dest, **options, after_shard=_interrupt_after_first_shard)
    assert not (dest / "manifest.json").exists() and (dest / ".progress.json").exists()
    assert _shard_files(dest) == ["images-00000.npy", "labels-00000.npy"]
    with pytest.raises(UserError, match="unfinished"):
        _dataset(dest, 24)
    first_mtime = (dest / "images-00000.npy").stat().st_mtime_ns
    written = []
    prepare_dataset(photos, dest, **options, after_shard=written.append)
    assert written == [1, 2]  # shard 0 was not decoded again
    assert (dest / "images-00000.npy").stat().st_mtime_ns == first_mtime
    assert not (dest / ".progress.json").exists()
    assert _shard_files(dest) == _shard_files(archive_dir)
    for name in _shard_files(dest):
        assert np.array_equal(np.load(dest / name), np.load(archive_dir / name)), name
    for name in ("manifest.json", "class_index.json"):
        assert json.loads((dest / name).read_text()) == json.loads((archive_dir / name).read_text())
    with pytest.raises(UserError, match="other files or settings"):
        prepare_dataset(photos, dest, resolution=32, shard_size=4, workers=0)


def test_bad_source_or_destination_is_a_user_error(photos, tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        prepare_dataset(tmp_path / "nope", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no class folders"):
        prepare_dataset(tmp_path / "empty", tmp_path / "out")
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(UserError, match="cannot write to"):
        prepare_dataset(photos, tmp_path / "a-file" / "archive")


def _cli(*args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "triplane-gan"), *args], capture_output=True, text=True, timeout=timeout, env=dict(os.environ)
    )


def test_cli_help_and_one_line_error(tmp_path):
    result = _cli("prepare-dataset", "--help")
    assert result.returncode == 0 and "--resolution" in result.stdout and "SRC" in result.stdout
    result = _cli("prepare-dataset", str(tmp_path / "nope"), str(tmp_path / "out"), "--resolution", "32")
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "nope" in errors[0] and "Traceback" not in result.stderr


def test_ns_train_on_the_archive(archive_dir, tmp_path):
    result = subprocess.run(
        [
            str(BIN / "ns-train"), "triplane-gan-tiny",
            "--max-num-iterations", "2",
            "--output-dir", str(tmp_path),
            "--experiment-name", "archive", "--timestamp", "run",
            "triplane-gan-imagenet", "--data", str(archive_dir),
        ],
        capture_output=True, text=True, timeout=600, env=dict(os.environ),
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    run = tmp_path / "archive" / "triplane-gan-tiny" / "run"
    assert (run / "config.yml").exists() and "ImageFolderDataParserConfig" in (run / "config.yml").read_text()
    assert list((run / "nerfstudio_models").glob("step-*.ckpt"))
