"""triplane-gan-ns: class-conditional 3D generators from unposed photos, as a nerfstudio plugin."""

__version__ = "0.1.0"
