"""Pose samplers: where the generator's cameras look from (no pose labels are needed in the data)."""
