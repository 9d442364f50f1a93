"""Token positions and rotary position embeddings of the LTX-2 transformer and text connectors.

Positions follow ltx-core exactly: video tokens carry ``[start, end)`` bounds in pixel space (time in
seconds at the real fps, with the causal first-frame fix), audio tokens carry ``[start, end)`` in seconds.
The RoPE tables are built once per request on the host with NumPy, in the precision ltx-core uses
(frequency grid in float64 when the config says so, the rest in float32), so no float64 is ever needed
on the GPU and nothing is rebuilt per denoising step.
"""

from __future__ import annotations

from dataclasses import dataclass

import mlx.core as mx
import numpy as np

VIDEO_SCALE = (8, 32, 32)  # frames, pixels, pixels per latent cell
AUDIO_LATENT_DOWNSAMPLE = 4  # mel frames per audio latent frame


def video_positions(frames: int, height: int, width: int, fps: float, causal_fix: bool = True) -> np.ndarray:
    """``(1, 3, F*H*W, 2)`` float32 bounds of every latent cell (ltx-core ``VideoLatentTools``).

    Axis 1 is (time in seconds, y in pixels, x in pixels); tokens are ordered frame, row, column.
    """
    f, h, w = np.meshgrid(np.arange(frames), np.arange(height), np.arange(width), indexing="ij")
    starts = np.stack([f, h, w]).reshape(3, -1).astype(np.int64)
    bounds = np.stack([starts, starts + 1], axis=-1) * np.array(VIDEO_SCALE).reshape(3, 1, 1)
    if causal_fix:  # the first latent frame stands for one pixel frame, not eight
        bounds[0] = np.clip(bounds[0] + 1 - VIDEO_SCALE[0], 0, None)
    bounds = bounds.astype(np.float32)
    bounds[0] = bounds[0] / np.float32(fps)
    return bounds[None]


def audio_positions(frames: int, sample_rate: int = 16000, hop_length: int = 160, causal: bool = True) -> np.ndarray:
    """``(1, 1, T, 2)`` float32 ``[start, end)`` seconds of every audio latent frame (ltx-core ``AudioPatchifier``)."""

    def seconds(latent_frames: np.ndarray) -> np.ndarray:
        mel = latent_frames.astype(np.float32) * AUDIO_LATENT_DOWNSAMPLE
        if causal:
            mel = np.clip(mel + 1 - AUDIO_LATENT_DOWNSAMPLE, 0, None)
        return mel * np.float32(hop_length) / np.float32(sample_rate)

    index = np.arange(frames)
    return np.stack([seconds(index), seconds(index + 1)], axis=-1)[None, None].astype(np.float32)


def frequency_grid(theta: float, n_axes: int, dim: int, double_precision: bool) -> np.ndarray:
    """ltx-core ``generate_freq_grid_{np,pytorch}``: ``dim // (2 n_axes)`` frequencies times pi/2, float32."""
    count = dim // (2 * n_axes)
    if double_precision:
        grid = np.power(theta, np.linspace(0.0, 1.0, count, dtype=np.float64))
        return (grid * np.pi / 2).astype(np.float32)
    grid = np.power(np.float32(theta), np.linspace(0.0, 1.0, count, dtype=np.float32)).astype(np.float32)
    return grid * np.float32(np.pi) / np.float32(2)


@dataclass(frozen=True)
class RotaryTables:
    """cos/sin tables: split layout (B, H, T, D/2), interleaved layout (B, T, dim)."""

    cos: mx.array
    sin: mx.array
    split: bool


def rotary_tables(
    positions: np.ndarray,
    dim: int,
    heads: int,
    theta: float,
    max_pos: list[int],
    use_middle: bool,
    split: bool,
    double_precision: bool,
    dtype: mx.Dtype = mx.float32,
) -> RotaryTables:
    """ltx-core ``precompute_freqs_cis`` for positions ``(B, n_axes, T, 2)`` (bounds) or ``(B, n_axes, T)``."""
    positions = np.asarray(positions, dtype=np.float32)
    n_axes = positions.shape[1]
    if positions.ndim == 4:
        positions = (positions[..., 0] + positions[..., 1]) / np.float32(2.0) if use_middle else positions[..., 0]
    fractions = np.stack([positions[:, i] / np.float32(max_pos[i]) for i in range(n_axes)], axis=-1)  # (B, T, n)
    grid = frequency_grid(theta, n_axes, dim, double_precision)
    # (B, T, n, F) -> (B, T, F, n) -> (B, T, F * n): frequency-major, axis-minor, as ltx-core flattens it.
    freqs = (grid * (fractions[..., None] * np.float32(2) - np.float32(1))).swapaxes(-1, -2)
    freqs = freqs.reshape(*freqs.shape[:2], -1).astype(np.float32)
    cos, sin = np.cos(freqs), np.sin(freqs)
    batch, tokens = freqs.shape[:2]
    if split:
        pad = dim // 2 - freqs.shape[-1]
        cos = np.concatenate([np.ones((batch, tokens, pad), np.float32), cos], axis=-1)
        sin = np.concatenate([np.zeros((batch, tokens, pad), np.float32), sin], axis=-1)
        cos = cos.reshape(batch, tokens, heads, -1).swapaxes(1, 2)
        sin = sin.reshape(batch, tokens, heads, -1).swapaxes(1, 2)
    else:
        pad = dim % (2 * n_axes)
        cos, sin = np.repeat(cos, 2, axis=-1), np.repeat(sin, 2, axis=-1)
        cos = np.concatenate([np.ones((batch, tokens, pad), np.float32), cos], axis=-1)
        sin = np.concatenate([np.zeros((batch, tokens, pad), np.float32), sin], axis=-1)
    return RotaryTables(mx.array(cos).astype(dtype), mx.array(sin).astype(dtype), split)


def apply_rotary(x: mx.array, tables: RotaryTables) -> mx.array:
    """Rotate ``x`` (B, T, H*D) by the tables (ltx-core ``apply_{split,interleaved}_rotary_emb``)."""
    if tables.split:
        b, t, inner = x.shape
        heads = tables.cos.shape[1]
        x = x.reshape(b, t, heads, -1).transpose(0, 2, 1, 3)
        half = x.shape[-1] // 2
        first, second = x[..., :half], x[..., half:]
        rotated = mx.concatenate(
            [first * tables.cos - second * tables.sin, second * tables.cos + first * tables.sin], axis=-1
        )
        return rotated.transpose(0, 2, 1, 3).reshape(b, t, inner)
    pairs = x.reshape(*x.shape[:-1], -1, 2)
    rotated = mx.stack([-pairs[..., 1], pairs[..., 0]], axis=-1).reshape(x.shape)
    return x * tables.cos + rotated * tables.sin
