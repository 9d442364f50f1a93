"""Sinusoidal timestep embeddings followed by a two-layer MLP (PixArt-alpha style), as in ltx-core."""

from __future__ import annotations

import math

import mlx.core as mx
import mlx.nn as nn

SINUSOID_CHANNELS = 256


def timestep_embedding(
    timesteps: mx.array,
    dim: int = SINUSOID_CHANNELS,
    flip_sin_to_cos: bool = True,
    downscale_freq_shift: float = 0.0,
    max_period: float = 10000.0,
) -> mx.array:
    """(N,) timesteps -> (N, dim) float32 sinusoids (ltx-core ``get_timestep_embedding``)."""
    half = dim // 2
    exponent = -math.log(max_period) * mx.arange(half, dtype=mx.float32) / (half - downscale_freq_shift)
    angles = timesteps.astype(mx.float32)[:, None] * mx.exp(exponent)[None, :]
    sin, cos = mx.sin(angles), mx.cos(angles)
    emb = mx.concatenate([cos, sin] if flip_sin_to_cos else [sin, cos], axis=-1)
    return mx.pad(emb, [(0, 0), (0, 1)]) if dim % 2 else emb


class TimestepMLP(nn.Module):
    def __init__(self, in_channels: int, dim: int) -> None:
        super().__init__()
        self.linear_1 = nn.Linear(in_channels, dim)
        self.linear_2 = nn.Linear(dim, dim)

    def __call__(self, x: mx.array) -> mx.array:
        return self.linear_2(nn.silu(self.linear_1(x)))


class TimestepEmbedder(nn.Module):
    """ltx-core ``PixArtAlphaCombinedTimestepSizeEmbeddings`` without size embedding: (N,) -> (N, dim)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.timestep_embedder = TimestepMLP(SINUSOID_CHANNELS, dim)

    def __call__(self, timesteps: mx.array, dtype: mx.Dtype) -> mx.array:
        return self.timestep_embedder(timestep_embedding(timesteps).astype(dtype))
