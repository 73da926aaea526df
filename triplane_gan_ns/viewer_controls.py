"""Which latent nerfstudio's viewer renders: class (by index or by name), seed and truncation psi.

``GeneratorControls`` is a module without parameters or buffers that the model holds as ``model.controls``.
nerfstudio's viewer (``triplane-gan viewer --load-config RUN/config.yml``, ``ns-viewer`` and ``ns-train ... --vis viewer``) collects
every ``ViewerElement`` attribute of the modules under the pipeline and shows it in the "Custom Elements"
panel of its Control tab (folder ``gan_model/controls``); a change of any of them re-renders the view.  A new
viewer client starts looking at the object from outside its box (``InitialView``), z up, not from viser's
default camera, which sits inside the box.

Without a viewer the same elements are plain values (an element without a GUI handle reads and writes its
default value), so scripts and tests use the same object::

    model.controls.select_class("sphere")   # or an index; keeps the slider and the dropdown in sync
    model.controls.seed.value = 7
    model.controls.truncation.value = 0.5
    model.controls.resample()               # a random seed (the "new sample" button)
    model.controls.current()                # PreviewLatent(class_index=2, seed=..., truncation=0.5)
"""

from __future__ import annotations

import math
import random
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, List, Optional, Sequence, Tuple, Union

from nerfstudio.viewer.viewer_elements import (
    ViewerButton,
    ViewerControl,
    ViewerDropdown,
    ViewerNumber,
    ViewerSlider,
)
from torch import nn

if TYPE_CHECKING:
    import viser
    from nerfstudio.viewer.viewer import Viewer

MAX_SEED = 2**31 - 1
"""Largest seed of the "new sample" button (any integer is a seed; torch wraps it to 64 bits)."""


@dataclass(frozen=True)
class PreviewLatent:
    """One latent of the generator: a class, the seed of ``z`` and the truncation psi of ``w``."""

    class_index: int
    seed: int
    truncation: float


def _as_int(value: Union[int, float]) -> int:
    """GUI numbers may arrive as floats."""
    return value if isinstance(value, int) else int(round(float(value)))


def unique_class_labels(class_names: Sequence[str], num_classes: int) -> List[str]:
    """Dropdown labels: the class names, with the index appended to names that occur more than once
    (ImageNet has two ``crane``s); ``class <i>`` for classes without a name."""
    names = [str(n) for n in class_names][:num_classes]
    names += [f"class {i}" for i in range(len(names), num_classes)]
    counts = Counter(names)
    return [name if counts[name] == 1 else f"{name} ({i})" for i, name in enumerate(names)]


class InitialView(ViewerControl):
    """Points every newly connected viewer client at the origin from ``position`` (world units), z up."""

    def __init__(self, position: Tuple[float, float, float], fov_degrees: float) -> None:
        self.position = tuple(float(p) for p in position)
        self.fov_degrees = float(fov_degrees)

    def _setup(self, viewer: Viewer) -> None:
        super()._setup(viewer)
        from nerfstudio.viewer.viewer import VISER_NERFSTUDIO_SCALE_RATIO as scale

        def look_at_object(client: viser.ClientHandle) -> None:
            with client.atomic():
                client.camera.up_direction = (0.0, 0.0, 1.0)
                client.camera.position = tuple(scale * p for p in self.position)
                client.camera.look_at = (0.0, 0.0, 0.0)
                client.camera.fov = math.radians(self.fov_degrees)

        self.viser_server.on_client_connect(look_at_object)


class GeneratorControls(nn.Module):
    """Viewer controls of the rendered latent; ``current()`` reads all of them at once.

    Args:
        class_names: Names of the classes, by index (may be empty for an unconditional generator).
        class_index: Initial class.
        seed: Initial seed of the latent ``z``.
        truncation: Initial truncation psi (1 = none, 0 = the class's average ``w``).
        initial_view: Where a new viewer client's camera starts (none: viser's default).
    """

    def __init__(
        self,
        class_names: Sequence[str],
        class_index: int = 0,
        seed: int = 0,
        truncation: float = 0.7,
        initial_view: Optional[InitialView] = None,
    ) -> None:
        super().__init__()
        self.num_classes = max(len(class_names), 1)
        self.class_labels = unique_class_labels(class_names, self.num_classes)
        self.class_names = [str(n) for n in class_names][: self.num_classes]
        index = self._clamp_index(class_index)
        single = self.num_classes == 1
        self._rng = random.Random()  # never the global RNG: training reproducibility depends on it
        # attribute names are sorted by the viewer: class_index, class_name, new_sample, seed, truncation
        self.class_index = ViewerSlider(
            "class index",
            index,
            0,
            max(self.num_classes - 1, 1),
            step=1,
            disabled=single,
            cb_hook=self._on_class_index,
            hint="Class of the rendered latent, by index",
        )
        self.class_name = ViewerDropdown(
            "class",
            self.class_labels[index],
            list(self.class_labels),
            disabled=single,
            cb_hook=self._on_class_name,
            hint="Class of the rendered latent, by name",
        )
        self.seed = ViewerNumber("seed", int(seed), hint="Seed of the latent z")
        self.truncation = ViewerSlider(
            "truncation psi",
            min(max(float(truncation), 0.0), 1.0),
            0.0,
            1.0,
            step=0.01,
            hint="1 = no truncation, 0 = the class's average latent",
        )
        self.new_sample = ViewerButton("new sample", cb_hook=lambda _: self.resample())
        self.initial_view = initial_view

    def _clamp_index(self, value: Union[int, float]) -> int:
        return min(max(_as_int(value), 0), self.num_classes - 1)

    # callbacks of the GUI: keep the slider and the dropdown showing the same class
    def _on_class_index(self, element: ViewerSlider) -> None:
        label = self.class_labels[self._clamp_index(element.value)]
        if self.class_name.value != label:
            self.class_name.value = label

    def _on_class_name(self, element: ViewerDropdown) -> None:
        if element.value not in self.class_labels:
            return
        index = self.class_labels.index(element.value)
        if self._clamp_index(self.class_index.value) != index:
            self.class_index.value = index

    # ---- plain-value interface ----------------------------------------------------------------------------
    def lookup(self, which: Union[int, str]) -> int:
        """Index of a class given by index, dropdown label or class name."""
        if isinstance(which, str):
            if which in self.class_labels:
                return self.class_labels.index(which)
            if which in self.class_names:
                return self.class_names.index(which)
            shown = ", ".join(self.class_labels[:8]) + (", ..." if self.num_classes > 8 else "")
            raise ValueError(f"unknown class {which!r}; classes: {shown}")
        index = int(which)
        if not 0 <= index < self.num_classes:
            raise ValueError(f"class index {index} is out of range 0..{self.num_classes - 1}")
        return index

    def select_class(self, which: Union[int, str]) -> int:
        """Show class ``which`` (index, label or name) in both controls; returns its index."""
        index = self.lookup(which)
        self.class_index.value = index
        self.class_name.value = self.class_labels[index]
        return index

    def resample(self) -> int:
        """Set a random seed (what the "new sample" button does); returns it."""
        seed = self._rng.randint(0, MAX_SEED)
        self.seed.value = seed
        return seed

    def current(self) -> PreviewLatent:
        """The latent the controls select now (each value read once, clamped to its valid range)."""
        return PreviewLatent(
            class_index=self._clamp_index(self.class_index.value),
            seed=_as_int(self.seed.value) % 2**64,  # the range of torch.Generator.manual_seed
            truncation=min(max(float(self.truncation.value), 0.0), 1.0),
        )

    def extra_repr(self) -> str:
        latent = self.current()
        return f"classes={self.num_classes}, class={latent.class_index}, seed={latent.seed}, psi={latent.truncation}"
