"""The class of a photo among a run's classes, by the discriminator or by an ImageNet classifier.

* discriminator: the class whose conditioning makes the run's discriminator find the photo most real
  (``guess_class`` in ``invert.py``);
* classifier: when the run's classes are ImageNet classes (WordNet ids such as ``n01440764``), EfficientNet-Lite0's
  1000-way ImageNet head, its argmax restricted to the run's classes.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
from jaxtyping import Float
from torch import Tensor

from triplane_gan_ns.errors import UserError
from triplane_gan_ns.pretrained.imagenet_classes import is_wnid


def run_wnids(class_ids: Sequence[str], class_names: Sequence[str]) -> Optional[List[str]]:
    """The WordNet id of each class of a run (its id, else its name), or None unless every class has one."""
    if not class_names:
        return None
    ids = list(class_ids) if len(class_ids) == len(class_names) else [""] * len(class_names)
    wnids = []
    for class_id, name in zip(ids, class_names):
        wnid = next((text.strip() for text in (class_id, name) if is_wnid(text)), None)
        if wnid is None:
            return None
        wnids.append(wnid)
    return wnids


def imagenet_columns(wnids: Sequence[str], imagenet_wnids: Sequence[str]) -> List[int]:
    """The classifier output of each of ``wnids`` (the run's classes, in label order)."""
    position = {wnid: i for i, wnid in enumerate(imagenet_wnids)}
    missing = [w for w in wnids if w not in position]
    if missing:
        raise UserError(
            f"class {missing[0]} of the run is not one of the 1000 ImageNet-1k classes, so the ImageNet classifier "
            "cannot guess it; use --class-guess discriminator or --class"
        )
    return [position[w] for w in wnids]


@torch.no_grad()
def classify_among(
    classifier, photo: Float[Tensor, "1 3 h w"], columns: Sequence[int]
) -> Tuple[int, Float[Tensor, " n"]]:
    """(label of the most probable run class, softmax over the run's classes) from ``classifier.class_logits``
    (ImageNet-1k logits of images in [0, 1]), restricted to the outputs ``columns`` (one per run class)."""
    logits = classifier.class_logits(photo)[0].float().cpu()
    restricted = logits[torch.as_tensor(list(columns), dtype=torch.long)]
    return int(restricted.argmax()), restricted.softmax(0)
