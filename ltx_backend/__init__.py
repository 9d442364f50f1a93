"""ltx-backend: LTX-2 / LTX-2.3 video-with-audio generation on MLX."""

import os as _os

__version__ = "0.1.0"

# MLX's CUDA backend keeps its cuDNN convolution plans (and SDPA plans, CUDA graphs) in LRU caches whose lifetime
# miss counter throws "Cache thrashing ..." once it passes twice the capacity (mlx/backend/cuda/lru_cache.h): a
# tiled decode alone meets ~100 convolution shapes, and a long-lived `serve` meets every size its jobs ask for, so
# the check would end jobs, not warn. It is turned off (a miss only rebuilds a plan), and the convolution cache
# holds more plans; a value the user set wins. The caches read these when first used, after this import. A decode
# in time chunks meets a shape per chunk size, tile and segment: with 1024 plans, 768x512x121 in `default` tiles
# took 1.21 s a decode, rebuilding plans, and 0.49 s with 2048 (H100, 2026-12-06).
_os.environ.setdefault("MLX_ENABLE_CACHE_THRASHING_CHECK", "0")
_os.environ.setdefault("MLX_CUDA_CONV_CACHE_SIZE", "4096")
