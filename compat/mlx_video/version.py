"""The mlx-video-with-audio interface level this shim implements (the app compares it with its minimum)."""

__version__ = "0.1.37"
