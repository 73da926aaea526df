"""ImageNet-style class folders: class mapping, decoding of every kind of file, unreadable files, flips."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from photo_fixtures import BLUE, CLASS_IDS, CLASS_NAMES, NUM_BAD, RED, make_photo_tree, two_colour
from triplane_gan_ns.data.datamanager import GanDataManagerConfig
from triplane_gan_ns.data.dataset import ClassImageDataset, load_square_rgb
from triplane_gan_ns.data.imagenet_dataparser import ImageFolderDataParserConfig
from triplane_gan_ns.errors import UserError


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("photos")
    make_photo_tree(root)
    return root


def _outputs(data: Path, **kwargs):
    return ImageFolderDataParserConfig(data=data, **kwargs).setup().get_dataparser_outputs(split="train")


def _datamanager(data: Path, **kwargs):
    options = dict(resolution=16, batch_size=4, cache_images=False, num_workers=0)
    options.update(kwargs)
    config = GanDataManagerConfig(dataparser=ImageFolderDataParserConfig(data=data), **options)
    return config.setup(device="cpu")


def test_class_mapping_is_sorted_folder_order(photos, tmp_path):
    out = _outputs(photos)
    assert out.metadata["class_ids"] == CLASS_IDS
    assert out.metadata["class_names"] == CLASS_NAMES  # from LOC_synset_mapping.txt, in folder order
    assert Path(out.metadata["root"]) == photos
    for path, label in zip(out.image_filenames, out.metadata["labels"].tolist()):
        assert path.parent.name == CLASS_IDS[label]
    assert [p.name for p in out.image_filenames] == sorted(p.name for p in out.image_filenames)
    assert len(out.cameras) == len(out.image_filenames) and out.cameras.width[0].item() == 256
    # Without train/ and without a mapping file: same labels, names are the folder names.
    flat = tmp_path / "flat"
    make_photo_tree(flat, with_train=False)
    (flat / "LOC_synset_mapping.txt").unlink()
    out_flat = _outputs(flat)
    assert out_flat.metadata["class_names"] == CLASS_IDS
    assert torch.equal(out_flat.metadata["labels"], out.metadata["labels"])


def test_class_subset_and_limits(photos):
    out = _outputs(photos, classes=("cat", "n00000002"))  # a human name and a folder name, in any order
    assert out.metadata["class_ids"] == ["n00000002", "n00000003"]
    assert out.metadata["class_names"] == ["apple", "cat"]
    assert sorted(set(out.metadata["labels"].tolist())) == [0, 1]
    assert all(CLASS_IDS[1:][label] == p.parent.name for p, label in zip(out.image_filenames, out.metadata["labels"]))
    out = _outputs(photos, max_images_per_class=1)
    assert [p.name for p in out.image_filenames] == ["a.JPEG", "d.png", "h.jpg"]
    with pytest.raises(UserError, match="no class named 'dog'.*n00000001"):
        _outputs(photos, classes=("dog",))


def test_bad_folders_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        _outputs(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no class folders"):
        _outputs(tmp_path / "empty")
    (tmp_path / "noimages" / "n01").mkdir(parents=True)
    (tmp_path / "noimages" / "n01" / "readme.txt").write_text("x")
    with pytest.raises(UserError, match="no images found"):
        _outputs(tmp_path / "noimages")


def test_decoded_images_are_square_rgb_with_centre_crop(photos):
    dataset = ClassImageDataset(_outputs(photos, background=(0.0, 1.0, 0.0)), resolution=32)
    names = [p.name for p in dataset.image_filenames]
    for i in range(len(dataset)):
        item = dataset[i]
        assert item["image"].shape == (32, 32, 3) and item["image"].dtype == torch.float32
        assert item["valid"] == (names[i] not in ("bad_text.JPEG", "f.JPEG", "g.JPEG")), names[i]
    crop = dataset.get_numpy_image(names.index("a.JPEG")).astype(int)  # 300x200: the crop spans x 50..250
    assert np.abs(crop[:, 2:14] - RED).max() < 12 and np.abs(crop[:, 18:30] - BLUE).max() < 12
    gray = dataset.get_numpy_image(names.index("b.JPEG")).astype(int)
    assert np.array_equal(gray[..., 0], gray[..., 1]) and np.array_equal(gray[..., 1], gray[..., 2])
    assert dataset.get_numpy_image(names.index("c.JPEG")).std() > 5  # CMYK decoded to RGB, not blank
    rgba = dataset.get_numpy_image(names.index("d.png")).astype(int)  # top half transparent over green
    assert np.abs(rgba[:12] - (0, 255, 0)).max() <= 1 and np.abs(rgba[20:] - RED).max() <= 1
    assert dataset.get_numpy_image(names.index("e.png")).std() > 5  # palette
    with pytest.raises(OSError):
        dataset.get_numpy_image(names.index("f.JPEG"))  # a truncated file is never padded


def test_exif_orientation_is_applied(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # stored landscape; displayed rotated 90 degrees clockwise (left half on top)
    two_colour(200, 100).save(tmp_path / "rotated.jpg", quality=95, exif=exif)
    image = load_square_rgb(tmp_path / "rotated.jpg", 20).astype(int)
    assert np.abs(image[:8] - RED).max() < 12 and np.abs(image[12:] - BLUE).max() < 12


def _valid_pairs(photos: Path, resolution: int):
    dataset = ClassImageDataset(_outputs(photos), resolution=resolution)
    items = [dataset[i] for i in range(len(dataset))]
    return [(item["image"], int(item["label"])) for item in items if item["valid"]]


@pytest.mark.parametrize("cache_images", [False, True])
def test_bad_files_are_replaced_and_counted(photos, cache_images):
    from nerfstudio.utils.rich_utils import CONSOLE

    valid = _valid_pairs(photos, 16)
    datamanager = _datamanager(photos, cache_images=cache_images, warn_every=1000)
    with CONSOLE.capture() as captured:
        for step in range(12):  # 2 batches of 4 per epoch (drop_last): 6 epochs see every file
            batch = datamanager.next_train(step)
            assert batch["image"].shape == (4, 3, 16, 16) and batch["label"].shape == (4,)
            for image, label in zip(batch["image"], batch["label"].tolist()):
                hwc = image.permute(1, 2, 0)
                assert any(torch.equal(hwc, v) and label == lv for v, lv in valid)
    assert datamanager.skipped_files == NUM_BAD
    warnings = [line for line in captured.get().splitlines() if "unreadable" in line]
    assert len(warnings) == 1  # at most one report per warn_every steps


def test_folder_of_unreadable_files_is_a_user_error(tmp_path):
    (tmp_path / "bad" / "n01").mkdir(parents=True)
    for i in range(3):
        (tmp_path / "bad" / "n01" / f"{i}.JPEG").write_text("not a picture")
    datamanager = _datamanager(tmp_path / "bad", batch_size=2, max_unreadable_batches=3)
    with pytest.raises(UserError, match=f"no readable image.*{tmp_path / 'bad'}"):
        datamanager.next_train(0)
    assert datamanager.skipped_files == 3


@pytest.mark.parametrize("hflip", [False, True])
def test_hflip(tmp_path, hflip):
    for i in range(4):
        (tmp_path / "lr" / "n01").mkdir(parents=True, exist_ok=True)
        two_colour(64, 64).save(tmp_path / "lr" / "n01" / f"{i}.png")
    datamanager = _datamanager(tmp_path / "lr", hflip=hflip, cache_images=True)
    left = torch.cat([datamanager.next_train(s)["image"][:, 0, :, :4].mean((1, 2)) for s in range(4)])  # red
    flipped = left < 0.5
    assert flipped.any().item() == hflip and (~flipped).any().item()


def test_dataparsers_are_registered_with_nerfstudio():
    code = (
        "import nerfstudio.data.datamanagers.base_datamanager\n"  # discovery runs inside this import
        "from nerfstudio.configs.dataparser_configs import all_dataparsers\n"
        "print(sorted(k for k in all_dataparsers if k.startswith('triplane-gan')))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "['triplane-gan-imagenet', 'triplane-gan-renders']"


@pytest.mark.parametrize(
    "mode, value, expected",
    [("I;16", 1000, round(1000 * 255 / 65535)), ("I;16", 65535, 255), ("I", 30000, round(30000 * 255 / 65535)), ("F", 0.5, 128)],
)
def test_high_bit_depth_images_are_scaled_not_clipped(tmp_path, mode, value, expected):
    import numpy as np
    from PIL import Image

    from triplane_gan_ns.data.dataset import load_square_rgb

    dtype = {"I;16": np.uint16, "I": np.int32, "F": np.float32}[mode]
    path = tmp_path / ("img.png" if mode == "I;16" else "img.tiff")
    Image.fromarray(np.full((8, 8), value, dtype=dtype)).save(path)
    with Image.open(path) as check:
        assert check.mode in (mode, "I", "I;16", "F")  # PIL may read 16-bit PNGs back as "I"
    image = load_square_rgb(path, 4)
    assert image.shape == (4, 4, 3)
    assert (image == expected).all(), (image[0, 0], expected)
