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
    """cos/sin tables: split layout (B, T, H, D/2), interleaved layout (B, T, dim)."""

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
    """ltx-core ``precompute_freqs_cis`` for positions ``(B, n_axes, T, 2)`` (bounds) or ``(B, n_axes, T)``.

    Each axis has few distinct positions (a 16x16x24 latent: 16, 16 and 24), so cos/sin are computed on the host
    per distinct value, exactly as for every token, and gathered per token on the device: the same float32 values
    as computing all T x F of them, ~25x less host work (6144 tokens x 2046 frequencies, per stage and stream).
    """
    positions = np.asarray(positions, dtype=np.float32)
    n_axes = positions.shape[1]
    if positions.ndim == 4:
        positions = (positions[..., 0] + positions[..., 1]) / np.float32(2.0) if use_middle else positions[..., 0]
    grid = frequency_grid(theta, n_axes, dim, double_precision)
    batch, tokens = positions.shape[0], positions.shape[2]
    per_axis_cos, per_axis_sin = [], []
    for axis in range(n_axes):
        scaled = (positions[:, axis] / np.float32(max_pos[axis])) * np.float32(2) - np.float32(1)  # (B, T)
        values, index = np.unique(scaled, return_inverse=True)
        angles = (grid * values[:, None]).astype(np.float32)  # (distinct, F)
        index = mx.array(index.reshape(-1).astype(np.int32))
        per_axis_cos.append(mx.take(mx.array(np.cos(angles)), index, axis=0))
        per_axis_sin.append(mx.take(mx.array(np.sin(angles)), index, axis=0))
    # (B*T, F) per axis -> (B, T, F, n) -> (B, T, F * n): frequency-major, axis-minor, as ltx-core flattens it.
    cos = mx.stack(per_axis_cos, axis=-1).reshape(batch, tokens, -1)
    sin = mx.stack(per_axis_sin, axis=-1).reshape(batch, tokens, -1)
    if split:
        pad = dim // 2 - cos.shape[-1]
        cos = mx.concatenate([mx.ones((batch, tokens, pad)), cos], axis=-1).reshape(batch, tokens, heads, -1)
        sin = mx.concatenate([mx.zeros((batch, tokens, pad)), sin], axis=-1).reshape(batch, tokens, heads, -1)
    else:
        pad = dim % (2 * n_axes)
        cos = mx.concatenate([mx.ones((batch, tokens, pad)), mx.repeat(cos, 2, axis=-1)], axis=-1)
        sin = mx.concatenate([mx.zeros((batch, tokens, pad)), mx.repeat(sin, 2, axis=-1)], axis=-1)
    return RotaryTables(cos.astype(dtype), sin.astype(dtype), split)


def apply_rotary(x: mx.array, tables: RotaryTables) -> mx.array:
    """Rotate ``x`` (B, T, H*D) by the tables (ltx-core ``apply_{split,interleaved}_rotary_emb``).

    Both layouts rotate pairs (the two halves of each head, or neighbouring channels) as one elementwise
    expression over a view with the pair as its own axis; the partner comes from a reversed view of that axis, so
    compiled, it is one fused kernel without the copies a concatenate or stack would make.
    """
    b, t, inner = x.shape
    if tables.split:  # pairs (i, i + D/2) of each head
        pairs = x.reshape(b, t, tables.cos.shape[2], 2, -1)
        cos, sin = tables.cos[:, :, :, None], tables.sin[:, :, :, None]
    else:  # pairs (2i, 2i + 1)
        pairs = x.reshape(b, t, -1, 2)
        cos, sin = tables.cos.reshape(*tables.cos.shape[:2], -1, 2), tables.sin.reshape(*tables.sin.shape[:2], -1, 2)
        cos, sin = cos[..., :1], sin[..., :1]  # the table repeats each value for both members of a pair
    # The sign goes on the partner, not on the table: (-b) * sin rounds as b * (-sin), and a signed table, shared by
    # the q and k rotations, would be a separate full-size kernel in every block.
    sign = mx.array(_PAIR_SIGNS[tables.split], dtype=sin.dtype)
    partner = pairs[..., ::-1, :] if tables.split else pairs[..., ::-1]
    return (pairs * cos + (partner * sign) * sin).reshape(b, t, inner)


# first member: a * cos - b * sin; second: b * cos + a * sin
_PAIR_SIGNS = {True: [[-1.0], [1.0]], False: [-1.0, 1.0]}
