"""The single-device trainer: data, losses, optimiser, checkpoints, metrics, the loop."""
