"""Single-photo 3D reconstruction by two-stage Pivotal Tuning Inversion."""
