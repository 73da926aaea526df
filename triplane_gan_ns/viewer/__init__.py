"""Controls of the generator in nerfstudio's viewer."""

from triplane_gan_ns.viewer.controls import GeneratorControls, PreviewLatent

__all__ = ["GeneratorControls", "PreviewLatent"]
