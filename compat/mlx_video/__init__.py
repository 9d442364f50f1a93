"""`mlx_video` as the LTX Video Generator app knows it, provided by ltx-backend's compat shim.

Only `mlx_video.generate_av` (the 0.1.37 command line and its `generate_video_with_audio` function) and
`mlx_video.version` are provided. Importing the package has no side effects.
"""

from mlx_video.version import __version__

__all__ = ["__version__"]
