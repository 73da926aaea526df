"""Fields: decoders from a generated 3D representation to density and colour."""
