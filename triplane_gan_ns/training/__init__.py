"""GAN training inside nerfstudio's trainer: the pipeline computes losses, the trainer alternates G and D."""
