"""Discriminators: networks that score images of a class as real or generated."""
