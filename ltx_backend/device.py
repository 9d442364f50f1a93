"""What the device MLX computes on is, where a code path depends on it."""

from __future__ import annotations

import mlx.core as mx


def cuda_gpu() -> bool:
    """MLX's CUDA backend is present and its GPU is the default device (not Metal, not a CPU)."""
    cuda = getattr(mx, "cuda", None)
    return cuda is not None and cuda.is_available() and "gpu" in str(mx.default_device())
