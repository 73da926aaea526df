"""Single-photo 3D reconstruction by two-stage Pivotal Tuning Inversion: perceptual distances (``perceptual.py``)
the two stages and the camera search (``invert.py``), the class guess (``class_guess.py``) and the foreground mask
(``foreground.py``).  The command that adds views and a mesh of the result is
``triplane_gan_ns/cli/invert.py``."""
