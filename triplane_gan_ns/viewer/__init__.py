"""``triplane-gan viewer``: nerfstudio's web viewer on a trained run, bound to 127.0.0.1 unless told otherwise
(``serve.py``: ``view_run``).
The controls it shows (class, seed, truncation, new sample) belong to the model: ``triplane_gan_ns/viewer_controls.py``."""
