"""Backbones: networks that map (latent, class label) to a triplane."""
