"""Sigma schedules of the LTX-2 pipelines (ltx-pipelines ``constants.py``, ltx-core ``LTX2Scheduler``)."""

from __future__ import annotations

import math

import numpy as np

# Distilled checkpoints: 8 steps at half resolution, then 3 after the x2 upsample (re-noised to the first sigma).
DISTILLED_STAGE_1 = (1.0, 0.99375, 0.9875, 0.98125, 0.975, 0.909375, 0.725, 0.421875, 0.0)
DISTILLED_STAGE_2 = (0.909375, 0.725, 0.421875, 0.0)
BASE_SHIFT_TOKENS, MAX_SHIFT_TOKENS = 1024, 4096


def _torch_linspace_1_to_0(count: int) -> np.ndarray:
    """``torch.linspace(1, 0, count)`` on CPU, bit for bit: ``1 + step * i`` for the first half and
    ``0 - step * (count - 1 - i)`` for the rest, each with a single rounding (a fused multiply-add; the float64
    product and sum are exact here), ``step = float32(-1) / float32(count - 1)``."""
    if count == 1:
        return np.ones(1, dtype=np.float32)
    step = np.float64(np.float32(-1.0) / np.float32(count - 1))
    i = np.arange(count, dtype=np.float64)
    return np.where(i < count // 2, 1.0 + step * i, 0.0 - step * (count - 1 - i)).astype(np.float32)


def ltx2_sigmas(
    steps: int,
    tokens: int = MAX_SHIFT_TOKENS,
    max_shift: float = 2.05,
    base_shift: float = 0.95,
    stretch: bool = True,
    terminal: float = 0.1,
) -> np.ndarray:
    """``LTX2Scheduler.execute``: a token-count-shifted schedule from 1 to 0, stretched so the last non-zero
    sigma is `terminal`. The dev pipelines call it without a latent, i.e. always with 4096 tokens.

    float32 with ltx-core's (PyTorch's) rounding, bit for bit: ``exp(shift) / (exp(shift) + (1 / s - 1))`` is
    ``e * reciprocal(e + (1 / s - 1))`` (``python_float / tensor``), so at 4096 tokens the first sigma is just
    below 1 (``e * (1 / e) != 1`` in float32). Degenerate ``steps=1``: ``[0.1, 0]`` at 4096 tokens, but
    ``[nan, 0]`` at token counts where the single sigma is exactly 1 (``0 / 0`` in the stretch), as in ltx-core.
    """
    f32 = np.float32
    sigmas = _torch_linspace_1_to_0(steps + 1)
    slope = (max_shift - base_shift) / (MAX_SHIFT_TOKENS - BASE_SHIFT_TOKENS)
    shift = tokens * slope + (base_shift - slope * BASE_SHIFT_TOKENS)  # Python floats, as ltx-core
    e = f32(math.exp(shift))
    with np.errstate(divide="ignore", invalid="ignore"):
        shifted = e * (f32(1) / (e + (f32(1) / sigmas - f32(1))))
        sigmas = np.where(sigmas != 0, shifted, f32(0)).astype(f32)
        if stretch:
            nonzero = sigmas != 0
            one_minus = f32(1) - sigmas[nonzero]
            scale = one_minus[-1] / f32(1.0 - terminal)
            sigmas[nonzero] = f32(1) - one_minus / scale
    return sigmas.astype(f32)
