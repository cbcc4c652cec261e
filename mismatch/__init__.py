"""mismatch: semi-supervised medical image segmentation studies (MisMatch and baselines)."""

__version__ = "0.1.0"
