"""Per-channel latent statistics of the audio and video VAEs, and the spellings checkpoints store them under.

ltx-core names them ``mean-of-means`` / ``std-of-means``; MLX conversions ``_mean_of_means`` or ``mean`` / ``std``.
Real checkpoints may carry more statistics that no model reads.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

PREFIX = "per_channel_statistics."
UNUSED_STATISTICS = ("channel", "mean_of_stds", "mean_of_stds_over_std_of_means")
_SPELLINGS = {"mean_of_means": "mean", "std_of_means": "std"}


class PerChannelStatistics(nn.Module):
    """Dataset mean and standard deviation of every latent feature (channels-last: the last axis)."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.mean = mx.zeros((features,))
        self.std = mx.ones((features,))

    def un_normalize(self, x: mx.array) -> mx.array:
        return x * self.std + self.mean

    def normalize(self, x: mx.array) -> mx.array:
        return (x - self.mean) / self.std


def statistics_key(key: str) -> str | None:
    """``per_channel_statistics.<any spelling>`` -> ``per_channel_statistics.mean`` / ``.std``; None if unused."""
    leaf = key.removeprefix(PREFIX).replace("-", "_").lstrip("_")
    return None if leaf in UNUSED_STATISTICS else PREFIX + _SPELLINGS.get(leaf, leaf)
