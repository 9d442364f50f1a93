"""ltx-backend: LTX-2 / LTX-2.3 video-with-audio generation on MLX."""

__version__ = "0.1.0"
