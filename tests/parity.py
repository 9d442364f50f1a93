"""The error measure of the parity tests against ltx-core's reference fixtures."""

from __future__ import annotations

import mlx.core as mx
import numpy as np


def relative_error(ours: mx.array, reference: np.ndarray) -> float:
    """Largest absolute difference over the reference's largest magnitude (shapes must agree)."""
    ours_np = np.array(ours.astype(mx.float32))
    assert ours_np.shape == reference.shape, (ours_np.shape, reference.shape)
    return float(np.abs(ours_np - reference).max() / np.abs(reference).max())
