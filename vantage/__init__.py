"""vantage: diffusion-based novel view synthesis in one tested PyTorch toolkit."""

__version__ = "0.1.0"
