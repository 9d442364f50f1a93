"""Anti-aliased 1-D resampling on channels-last signals (batch, time, channels).

The same low-pass filter is applied to every channel, so the filtering is written as a sum of shifted
slices (a depthwise FIR) rather than a grouped convolution: it runs the same on every MLX backend and
fuses well. Upsampling is done in polyphase form (one short FIR per output phase) rather than by
zero-stuffing, which halves (x2) or thirds (x3) the multiply-adds and skips the stuffed copies.
Filters follow ltx-core (BigVGAN's Kaiser-windowed sinc; torchaudio's Hann-windowed sinc for the
bandwidth-extension skip path).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

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


def upsample_phases(
    x: mx.array,
    taps: mx.array,
    ratio: int,
    pad: int,
    crop_left: int,
    start: int,
    stop: int,
    phases: Sequence[int] | None = None,
) -> list[mx.array]:
    """The polyphase components of :func:`upsample`: ``out[phase][m] = upsample(...)[ratio * m + phase]`` for
    ``m`` in ``[start, stop)`` (any range: ``x`` is read clamped to its ends, as the replicate padding does).

    Output sample ``ratio * m + phase`` of the transposed convolution only meets every ``ratio``-th tap, so each
    phase is a short FIR over ``x`` itself: no zero-stuffed signal is formed and no multiply-add is spent on zeros.
    """
    length, kernel = x.shape[1], taps.shape[-1]
    taps = taps.reshape(-1) * ratio
    plans = []  # (taps in correlation order, first x index read at m = start, tap count)
    for phase in range(ratio) if phases is None else phases:
        first_tap, offset = (phase + crop_left) % ratio, (phase + crop_left) // ratio
        count = -(-(kernel - first_tap) // ratio)
        plans.append((taps[first_tap::ratio][:count][::-1], start + offset - pad - count + 1, count))
    lo = min(first for _, first, _ in plans)
    hi = max(first + count - 1 for _, first, count in plans) + stop - start - 1
    # Only the part of x that is read, replicate-padded where the reads run past its ends.
    window = x[:, max(lo, 0) : min(hi, length - 1) + 1]
    window = mx.pad(window, [(0, 0), (max(0, -lo), max(0, hi - length + 1)), (0, 0)], mode="edge")
    n = stop - start
    return [fir(window[:, first - lo : first - lo + n + count - 1], t) for t, first, count in plans]


def upsample(x: mx.array, taps: mx.array, ratio: int, pad: int, crop_left: int, crop_right: int) -> mx.array:
    """``ratio * conv_transpose1d(replicate_pad(x, pad), taps, stride=ratio)[crop_left:-crop_right]`` per channel,
    as its polyphase components interleaved."""
    b, length, c = x.shape
    out_length = (length + 2 * pad - 1) * ratio + taps.shape[-1] - crop_left - crop_right
    steps = -(-out_length // ratio)
    phases = upsample_phases(x, taps, ratio, pad, crop_left, 0, steps)
    return mx.stack(phases, axis=2).reshape(b, steps * ratio, c)[:, :out_length]


def lowpass_of_upsampled(
    x: mx.array,
    up_taps: mx.array,
    down_taps: mx.array,
    ratio: int,
    up_pad: int,
    up_crop_left: int,
    down_pad_left: int,
    fn: Callable[[mx.array], mx.array],
) -> mx.array:
    """``lowpass(fn(upsample(x, ...)), down_taps, ratio, down_pad_left, ...)`` for an elementwise ``fn``, where the
    upsampled signal is exactly ``ratio`` times as long as ``x`` (BigVGAN's anti-aliased activations).

    Works on the polyphase components throughout: ``fn`` runs on each phase, and the strided low-pass reads every
    phase at unit stride, so the ``ratio``-times-longer signal is never interleaved or padded. The replicate
    padding of the upsampled signal becomes: reads before its start take its first sample (phase 0, m = 0), reads
    past its end its last (phase ratio - 1, m = L - 1).
    """
    length = x.shape[1]
    down = down_taps.reshape(-1).astype(x.dtype)
    # Low-pass tap k of output t reads upsampled sample ratio * t + k - down_pad_left = ratio * (t + m) + phase.
    reads = [((k - down_pad_left) % ratio, (k - down_pad_left) // ratio) for k in range(down.shape[0])]
    before, after = max(0, -min(m for _, m in reads)), max(0, max(m for _, m in reads))
    phases = upsample_phases(x, up_taps, ratio, up_pad, up_crop_left, -before, length + after)
    first = upsample_phases(x, up_taps, ratio, up_pad, up_crop_left, 0, 1, phases=[0])[0]
    last = upsample_phases(x, up_taps, ratio, up_pad, up_crop_left, length - 1, length, phases=[ratio - 1])[0]
    index = mx.arange(-before, length + after)[:, None]
    phases = [fn(mx.where(index < 0, first, mx.where(index >= length, last, p))) for p in phases]
    out = down[0] * phases[reads[0][0]][:, before + reads[0][1] : before + reads[0][1] + length]
    for k, (phase, m) in enumerate(reads[1:], start=1):
        out = out + down[k] * phases[phase][:, before + m : before + m + length]
    return out
