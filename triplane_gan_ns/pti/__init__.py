"""Single-photo 3D reconstruction by two-stage Pivotal Tuning Inversion: perceptual distances (``perceptual.py``)
and the two stages (``invert.py``).  The command that adds views and a mesh of the result is
``triplane_gan_ns/cli/invert.py``."""
