"""nerfstudio method specifications of triplane-gan-ns (installed as ``triplane_gan_ns.method_configs``)."""
