"""Sigma schedules of the LTX-2 pipelines (ltx-pipelines ``constants.py``, ltx-core ``LTX2Scheduler``)."""

from __future__ import annotations

import math

import numpy as np

# Distilled checkpoints: 8 steps at half resolution, then 3 after the x2 upsample (re-noised to the first sigma).
DISTILLED_STAGE_1 = (1.0, 0.99375, 0.9875, 0.98125, 0.975, 0.909375, 0.725, 0.421875, 0.0)
DISTILLED_STAGE_2 = (0.909375, 0.725, 0.421875, 0.0)
BASE_SHIFT_TOKENS, MAX_SHIFT_TOKENS = 1024, 4096


def ltx2_sigmas(
    steps: int,
    tokens: int = MAX_SHIFT_TOKENS,
    max_shift: float = 2.05,
    base_shift: float = 0.95,
    stretch: bool = True,
    terminal: float = 0.1,
) -> np.ndarray:
    """``LTX2Scheduler.execute``: a token-count-shifted schedule from 1 to 0, stretched so the last non-zero
    sigma is `terminal`. The dev pipelines call it without a latent, i.e. always with 4096 tokens. float32."""
    sigmas = np.linspace(1.0, 0.0, steps + 1, dtype=np.float32)
    slope = (max_shift - base_shift) / (MAX_SHIFT_TOKENS - BASE_SHIFT_TOKENS)
    shift = math.exp(tokens * slope + base_shift - slope * BASE_SHIFT_TOKENS)
    nonzero = sigmas != 0
    with np.errstate(divide="ignore"):
        shifted = np.float32(shift) / (np.float32(shift) + (np.float32(1) / sigmas - np.float32(1)))
    sigmas = np.where(nonzero, shifted, np.float32(0)).astype(np.float32)
    if stretch:
        one_minus = np.float32(1) - sigmas[nonzero]
        scale = one_minus[-1] / np.float32(1.0 - terminal)
        sigmas[nonzero] = np.float32(1) - one_minus / scale
    return sigmas.astype(np.float32)
