"""What the compiled transformer block makes kernels of: no separate pass for a RoPE sign table or an AdaLN sum.

Counted on the graph `mx.compile` builds (``mx.export_to_dot``), views left out: each remaining node is one kernel.
The arithmetic is checked bit for bit against ltx-core's order of operations in float32.
"""

from __future__ import annotations

import io
import re

import mlx.core as mx
import numpy as np
import pytest

from ltx_backend.models.rope import apply_rotary, rotary_tables, video_positions
from ltx_backend.models.transformer import Attention, _ada

VIEWS = {"Slice", "Reshape", "Broadcast", "Squeeze", "ExpandDims", "Transpose", "AsStrided", "Flatten", "Unflatten"}


def kernels(*outputs: mx.array) -> list[str]:
    dot = io.StringIO()
    mx.export_to_dot(dot, *outputs)
    return [n for n in re.findall(r'label ="([A-Za-z]+)', dot.getvalue()) if n not in VIEWS]


def tables(split: bool, dtype: mx.Dtype = mx.float32):
    pe = rotary_tables(video_positions(2, 3, 4, 24.0), 64, 4, 10000.0, [20, 2048, 2048], True, split, False, dtype)
    mx.eval(pe.cos, pe.sin)
    return pe


@pytest.mark.parametrize("split", [False, True])
def test_rotation_matches_ltx_core_order_bit_for_bit(split: bool) -> None:
    """ltx-core: interleaved x * cos + stack(-x2, x1) * sin; split: x * cos, then -+ sin * the other half."""
    pe = tables(split)
    x = mx.random.normal((1, 24, 64), key=mx.random.key(0))
    xs, cos, sin = np.array(x), np.array(pe.cos), np.array(pe.sin)
    if split:  # (B, T, H, D/2) tables, pairs (i, i + D/2) of each head
        pairs = xs.reshape(1, 24, 4, 2, 8)
        first, second, cos, sin = pairs[..., 0, :], pairs[..., 1, :], cos, sin
    else:  # (B, T, dim) tables repeating each value for both members of a pair (2i, 2i + 1)
        pairs = xs.reshape(1, 24, 32, 2)
        first, second, cos, sin = pairs[..., 0], pairs[..., 1], cos[..., ::2], sin[..., ::2]
    expected = np.stack([first * cos + (-second) * sin, second * cos + first * sin], axis=-1 if not split else -2)
    expected = expected.reshape(1, 24, 64)
    assert np.array_equal(np.array(apply_rotary(x, pe)), expected)
    assert np.array_equal(np.array(mx.compile(lambda x: apply_rotary(x, pe))(x)), expected)


@pytest.mark.parametrize("split", [False, True])
def test_rotating_q_and_k_with_shared_tables_is_two_kernels(split: bool) -> None:
    pe = tables(split, mx.bfloat16)
    q, k = (mx.random.normal((1, 24, 64)).astype(mx.bfloat16) for _ in range(2))
    mx.eval(q, k)
    rotated = mx.compile(lambda q, k: (apply_rotary(q, pe), apply_rotary(k, pe)))(q, k)
    assert len(kernels(*rotated)) == 2  # one per rotation; a signed sin table would be a third


@pytest.mark.parametrize("tokens", [1, 5])  # one timestep for all tokens, or per token (a denoise mask)
def test_adaln_sums_compile_into_the_modulation(tokens: int) -> None:
    table = mx.random.normal((6, 16))
    values = mx.random.normal((1, tokens, 6 * 16))
    x = mx.random.normal((1, 5, 16))
    mx.eval(table, values, x)

    def modulate(x: mx.array, table: mx.array, values: mx.array) -> mx.array:
        shift, scale, gate = _ada(table, values, slice(3, 6))
        return (x * (1 + scale) + shift) * gate

    out = mx.compile(modulate)(x, table, values)
    assert len(kernels(out)) == 1
    rows = np.array(table)[3:6][None, None] + np.array(values).reshape(1, tokens, 6, 16)[:, :, 3:6]
    expected = (np.array(x) * (1 + rows[:, :, 1]) + rows[:, :, 0]) * rows[:, :, 2]
    np.testing.assert_allclose(np.array(out), expected, rtol=1e-6, atol=1e-6)


def test_attention_gate_is_one_kernel_with_its_multiply() -> None:
    """LTX-2.3's per-head gate: the gate logits' product and one kernel for out * 2 sigmoid(logits), not two."""
    x = mx.random.normal((1, 6, 32))
    counts = {}
    for gated in (False, True):
        attention = Attention(32, None, heads=2, dim_head=16, eps=1e-6, gated=gated)
        mx.eval(attention.parameters(), x)
        counts[gated] = len(kernels(mx.compile(attention)(x)))
    assert counts[True] == counts[False] + 2
