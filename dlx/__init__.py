"""dlx: a command-line deep-learning experiment runner driven by Hydra configs."""

__version__ = "0.1.0"
