"""Anti-aliased 1-D resampling on channels-last signals (batch, time, channels).

The same low-pass filter is applied to every channel, so the filtering is written as a sum of shifted
slices (a depthwise FIR) rather than a grouped convolution: it runs the same on every MLX backend and
fuses well. Upsampling is done in polyphase form (one short FIR per output phase) rather than by
zero-stuffing, which halves (x2) or thirds (x3) the multiply-adds and skips the stuffed copies.
Filters follow ltx-core (BigVGAN's Kaiser-windowed sinc; torchaudio's Hann-windowed sinc for the
bandwidth-extension skip path).
"""

from __future__ import annotations

import functools
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
    """Valid correlation of every channel of `x` (B, L, C) with `taps` (K,): ``y[t] = sum_k taps[k] x[t*s + k]``.

    Taps are taken as one-element slices (views), not by indexing: an index is a gather kernel per tap on a GPU."""
    kernel = taps.shape[0]
    n_out = (x.shape[1] - kernel) // stride + 1
    span = stride * (n_out - 1) + 1
    taps = taps.astype(x.dtype)
    return tree_sum([taps[k : k + 1] * x[:, k : k + span : stride] for k in range(kernel)])


def tree_sum(terms: list[mx.array]) -> mx.array:
    """Pairwise sum: depth log2(n) instead of n, so that MLX's compiler (which fuses at most 11 ops deep) keeps a
    FIR and what follows it in one kernel instead of splitting it and materialising the partial sums."""
    while len(terms) > 1:
        terms = [sum(terms[i : i + 2][1:], terms[i]) for i in range(0, len(terms), 2)]
    return terms[0]


def replicate_pad(x: mx.array, left: int, right: int) -> mx.array:
    """Pad the time axis of (B, L, C) by repeating its first and last samples (one copy, no fill)."""
    b, _, c = x.shape
    parts = [mx.broadcast_to(x[:, :1], (b, left, c))] if left > 0 else []
    parts += [x] + ([mx.broadcast_to(x[:, -1:], (b, right, c))] if right > 0 else [])
    return mx.concatenate(parts, axis=1) if len(parts) > 1 else x


def upsample_phases(
    x: mx.array, taps: mx.array, ratio: int, pad: int, crop_left: int, spans: Sequence[tuple[int, int, int]]
) -> list[mx.array]:
    """Polyphase components of :func:`upsample`: for each ``(phase, start, stop)``, ``upsample(...)[ratio * m + phase]``
    for ``m`` in ``[start, stop)`` (any range: ``x`` is read clamped to its ends, as the replicate padding does).

    Output sample ``ratio * m + phase`` of the transposed convolution only meets every ``ratio``-th tap, so each
    phase is a short FIR over ``x`` itself: no zero-stuffed signal is formed and no multiply-add is spent on zeros.
    """
    length, kernel = x.shape[1], taps.shape[-1]
    taps = taps.reshape(-1).astype(x.dtype) * ratio  # scaled once here, not per output sample (one op less a FIR)
    plans = []  # (phase taps in correlation order, x index read first for m = start, tap count)
    for phase, start, stop in spans:
        first_tap, offset = (phase + crop_left) % ratio, (phase + crop_left) // ratio
        count = -(-(kernel - first_tap) // ratio)
        phase_taps = taps[first_tap + ratio * (count - 1) :: -ratio][:count]
        plans.append((phase_taps, start + offset - pad - count + 1, count, stop - start))
    lo = min(first for _, first, _, _ in plans)
    hi = max(first + count + n - 2 for _, first, count, n in plans)
    # One window of x for every span: only the part that is read, replicate-padded where reads run past its ends.
    window = replicate_pad(x[:, max(lo, 0) : min(hi, length - 1) + 1], -lo, hi - length + 1)
    return [fir(window[:, first - lo : first - lo + n + count - 1], t) for t, first, count, n in plans]


def upsample(x: mx.array, taps: mx.array, ratio: int, pad: int, crop_left: int, crop_right: int) -> mx.array:
    """``ratio * conv_transpose1d(replicate_pad(x, pad), taps, stride=ratio)[crop_left:-crop_right]`` per channel,
    as its polyphase components interleaved."""
    b, length, c = x.shape
    out_length = (length + 2 * pad - 1) * ratio + taps.shape[-1] - crop_left - crop_right
    steps = -(-out_length // ratio)
    phases = upsample_phases(x, taps, ratio, pad, crop_left, [(phase, 0, steps) for phase in range(ratio)])
    return mx.stack(phases, axis=2).reshape(b, steps * ratio, c)[:, :out_length]


def lowpass_reads(kernel: int, ratio: int, pad_left: int) -> list[tuple[int, int]]:
    """Tap k of a stride-``ratio`` low-pass output ``t`` over a signal upsampled ``ratio`` times reads its sample
    ``ratio * t + k - pad_left``, i.e. ``(phase, m)``: phase ``phase`` at ``t + m``."""
    return [((k - pad_left) % ratio, (k - pad_left) // ratio) for k in range(kernel)]


@functools.lru_cache(maxsize=256)
def edge_masks(length: int, before: int, after: int) -> tuple[mx.array, mx.array]:
    """(m < 0, 0 <= m < length) for m in ``[-before, length + after)``, shaped (m, 1): made once per length, so the
    compiled activations take them as inputs instead of computing them in small kernels on every call."""
    m = np.arange(-before, length + after)[:, None]
    return mx.array(m < 0), mx.array((m >= 0) & (m < length))  # made from host data: no graph, no evaluation


def lowpass_of_upsampled(
    x: mx.array,
    up_taps: mx.array,
    down_taps: mx.array,
    ratio: int,
    up_pad: int,
    up_crop_left: int,
    down_pad_left: int,
    fn: Callable[[mx.array], mx.array],
    masks: tuple[mx.array, mx.array],
) -> mx.array:
    """``lowpass(fn(upsample(x, ...)), down_taps, ratio, down_pad_left, ...)`` for an elementwise ``fn``, where the
    upsampled signal is exactly ``ratio`` times as long as ``x`` (BigVGAN's anti-aliased activations).

    Works on the polyphase components throughout: ``fn`` runs on each phase, and the strided low-pass reads every
    phase at unit stride, so the ``ratio``-times-longer signal is never interleaved or padded. The low-pass's
    replicate padding becomes: reads before the upsampled signal's start take its first sample (phase 0, m = 0),
    reads past its end its last (phase ratio - 1, m = L - 1). ``masks`` is ``edge_masks(L, before, after)`` for the
    reads' extent (see :func:`lowpass_reads`).
    """
    length = x.shape[1]
    down = down_taps.reshape(-1).astype(x.dtype)
    reads = lowpass_reads(down.shape[0], ratio, down_pad_left)
    before, after = max(0, -min(m for _, m in reads)), max(0, max(m for _, m in reads))
    spans = [(phase, -before, length + after) for phase in range(ratio)]
    *phases, first, last = upsample_phases(
        x, up_taps, ratio, up_pad, up_crop_left, [*spans, (0, 0, 1), (ratio - 1, length - 1, length)]
    )
    is_before, inside = masks
    # One select on the phases' path (the edge value's own select only meets small inputs): the FIR, the select and
    # fn must stay within the compiler's fusion depth (11) to run as one kernel per phase.
    edge = mx.where(is_before, first, last)
    phases = [fn(mx.where(inside, p, edge)) for p in phases]
    return tree_sum(
        [down[k : k + 1] * phases[phase][:, before + m : before + m + length] for k, (phase, m) in enumerate(reads)]
    )
