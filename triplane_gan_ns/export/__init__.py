"""Using a trained generator: renders from any camera, meshes and density volumes (the latents they take are
``triplane_gan_ns/latents.py``).

* ``video.py``: ``render_latents`` (``triplane-gan render``): view grids, orbit videos, depth and opacity images;
* ``mesh.py``: ``export_mesh`` (``triplane-gan export-mesh``): marching cubes on the triplane's density, coloured
  vertices or a baked texture.
"""
