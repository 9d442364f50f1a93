"""Anti-aliased 1-D resampling on channels-last signals (batch, time, channels).

The same low-pass filter is applied to every channel, so the filtering is written as a sum of shifted
slices (a depthwise FIR) rather than a grouped convolution: it runs the same on every MLX backend and
fuses well. Filters follow ltx-core (BigVGAN's Kaiser-windowed sinc; torchaudio's Hann-windowed sinc
for the bandwidth-extension skip path).
"""

from __future__ import annotations

import math

import mlx.core as mx
import numpy as np


def kaiser_sinc_filter(cutoff: float, half_width: float, kernel_size: int) -> np.ndarray:
    """BigVGAN's Kaiser-windowed sinc low-pass filter (ltx-core ``kaiser_sinc_filter1d``), float32."""
    even = kernel_size % 2 == 0
    half_size = kernel_size // 2
    delta_f = 4 * half_width
    amplitude = 2.285 * (half_size - 1) * math.pi * delta_f + 7.95
    if amplitude > 50.0:
        beta = 0.1102 * (amplitude - 8.7)
    elif amplitude >= 21.0:
        beta = 0.5842 * (amplitude - 21) ** 0.4 + 0.07886 * (amplitude - 21.0)
    else:
        beta = 0.0
    window = np.kaiser(kernel_size, beta)
    time = np.arange(-half_size, half_size) + 0.5 if even else np.arange(kernel_size) - half_size
    if cutoff == 0:
        return np.zeros(kernel_size, dtype=np.float32)
    taps = 2 * cutoff * window * np.sinc(2 * cutoff * time)
    return (taps / taps.sum()).astype(np.float32)


def hann_sinc_filter(ratio: int, rolloff: float = 0.99, lowpass_filter_width: int = 6) -> tuple[np.ndarray, int]:
    """torchaudio-style Hann-windowed sinc interpolation filter for upsampling by `ratio`.

    Returns the taps (length ``2 * width * ratio + 1``) and ``width``, the replicate padding in input samples.
    """
    width = math.ceil(lowpass_filter_width / rolloff)
    kernel_size = 2 * width * ratio + 1
    time = (np.arange(kernel_size) / ratio - width) * rolloff
    clamped = np.clip(time, -lowpass_filter_width, lowpass_filter_width)
    window = np.cos(clamped * math.pi / lowpass_filter_width / 2) ** 2
    return (np.sinc(time) * window * rolloff / ratio).astype(np.float32), width


def fir(x: mx.array, taps: mx.array, stride: int = 1) -> mx.array:
    """Valid correlation of every channel of `x` (B, L, C) with `taps` (K,): ``y[t] = sum_k taps[k] x[t*s + k]``."""
    kernel = taps.shape[0]
    n_out = (x.shape[1] - kernel) // stride + 1
    span = stride * (n_out - 1) + 1
    taps = taps.astype(x.dtype)
    out = taps[0] * x[:, 0:span:stride]
    for k in range(1, kernel):
        out = out + taps[k] * x[:, k : k + span : stride]
    return out


def upsample(x: mx.array, taps: mx.array, ratio: int, pad: int, crop_left: int, crop_right: int) -> mx.array:
    """``ratio * conv_transpose1d(replicate_pad(x, pad), taps, stride=ratio)[crop_left:-crop_right]`` per channel.

    The transposed convolution is computed as zero-stuffing followed by a FIR with the reversed taps,
    evaluated only over the part of the output that survives the crop.
    """
    x = mx.pad(x, [(0, 0), (pad, pad), (0, 0)], mode="edge")
    b, length, c = x.shape
    stuffed = mx.concatenate([x[:, :, None, :], mx.zeros((b, length, ratio - 1, c), x.dtype)], axis=2)
    stuffed = stuffed.reshape(b, length * ratio, c)[:, : (length - 1) * ratio + 1]
    kernel = taps.shape[-1]
    full_length = (length - 1) * ratio + kernel
    padded = mx.pad(stuffed, [(0, 0), (kernel - 1, kernel - 1), (0, 0)])
    # Output sample n of the full transposed convolution reads padded[n : n + kernel].
    window = padded[:, crop_left : full_length - crop_right + kernel - 1]
    return ratio * fir(window, taps.reshape(-1)[::-1])


def lowpass(x: mx.array, taps: mx.array, stride: int, pad_left: int, pad_right: int) -> mx.array:
    """Replicate-padded FIR low-pass with decimation by `stride` (BigVGAN ``LowPassFilter1d``)."""
    x = mx.pad(x, [(0, 0), (pad_left, pad_right), (0, 0)], mode="edge")
    return fir(x, taps.reshape(-1), stride)
