"""Normalisation layers shared by the audio and video VAEs."""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn


class PixelNorm(nn.Module):
    """RMS norm over channels (the last axis) at every position, without a learned scale (ltx-core ``PixelNorm``).

    One fused kernel (``mx.fast.rms_norm``): at video resolution the unfused form holds two more full-size
    temporaries.
    """

    def __init__(self, eps: float) -> None:
        super().__init__()
        self.eps = eps

    def __call__(self, x: mx.array) -> mx.array:
        return mx.fast.rms_norm(x, None, self.eps)
