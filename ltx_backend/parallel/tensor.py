"""Tensor parallelism for a loaded ``LTXModel``: attention heads and feed-forward hidden units split over ranks.

A transform, not a second model: the blocks' attentions and feed-forwards keep their classes' code and get sharded
weights (Megatron's layout). Per sublayer the input projections are column-parallel (each rank computes its own
heads / hidden units, no communication) and the output projection is row-parallel (a partial product per rank,
then ONE ``all_sum``, then the bias once). That holds for every attention kind of both streams: video and audio
self-attention, text cross-attention, audio->video and video->audio attention, the fused q/k/v (``to_qkv``,
three segments) and k/v (``to_kv``, two segments) projections, and LTX-2.3's per-head gates (their logits are
column-parallel over the heads).

q/k RMS norm: LTX-2's ``q_norm``/``k_norm`` normalise over the whole inner width (all heads), not per head
(ltx-core ``Attention``: ``torch.nn.RMSNorm(inner_dim)``), so a rank holding half the heads cannot normalise on its
own: ``ShardedRMSNorm`` all-reduces the per-token sums of squares and applies its own slice of the learned scale.
q's and k's sums travel in one all-reduce (one float per token each): an attention sublayer makes two all-reduces,
that one (small, latency-bound) and its output's; a feed-forward makes one.

Replicated on every rank (computed identically everywhere, no communication): the patchify/output projections,
the AdaLN timestep embedders and scale/shift tables, the caption projection and the text connectors. They are a
few percent of the weights and run on one row per forward (the AdaLN embedders: one timestep row when every token
shares its sigma) or once per job (the connectors); sharding them would add an all-gather per use for nothing.

Quantized layers (Q4/Q8, ``nn.QuantizedLinear`` or ``DequantizingLinear``) are split along their quantization
groups: column-parallel splits whole output rows (weight, scales and biases alike); row-parallel splits the input
axis, which needs each rank's share of the input to be a whole number of groups (checked, with a clear error).
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from ltx_backend.errors import ErrorCode, LtxError
from ltx_backend.models.rope import RotaryTables
from ltx_backend.models.transformer import Attention, FeedForward, LTXModel


def _rank_slice(array: mx.array, axis: int, rank: int, ranks: int, segments: int = 1) -> mx.array:
    """This rank's 1/`ranks` share of each of `segments` equal parts of `array` along `axis`, concatenated."""
    parts = mx.split(array, segments, axis=axis) if segments > 1 else [array]
    return mx.contiguous(mx.concatenate([mx.split(part, ranks, axis=axis)[rank] for part in parts], axis=axis))


def _quantized(layer: nn.Module) -> bool:
    return isinstance(layer, nn.QuantizedLinear)


def _shard_columns(layer: nn.Module, rank: int, ranks: int, segments: int, where: str) -> None:
    """In place: keep this rank's output features of each segment (weight rows, scales, biases, bias)."""
    rows = layer["weight"].shape[0]
    if rows % (segments * ranks):
        raise _cannot(where, f"{rows} output features in {segments} part(s) do not split over {ranks} ranks")
    layer.update({key: _rank_slice(layer[key], 0, rank, ranks, segments) for key in layer if key in _ARRAYS})


def _shard_rows(layer: nn.Module, rank: int, ranks: int, where: str) -> None:
    """In place: keep this rank's input features (the last axis of weight, scales and biases); the bias is removed
    by the caller (``RowParallelLinear`` adds it once, after the all-reduce)."""
    if _quantized(layer):
        inputs = layer["scales"].shape[-1] * layer.group_size
        if (inputs // ranks) % layer.group_size or inputs % ranks:
            raise _cannot(
                where, f"{inputs} quantized inputs (groups of {layer.group_size}) do not split into whole groups "
                f"over {ranks} ranks"
            )  # fmt: skip
    elif layer["weight"].shape[-1] % ranks:
        raise _cannot(where, f"{layer['weight'].shape[-1]} input features do not split over {ranks} ranks")
    layer.update({key: _rank_slice(layer[key], -1, rank, ranks) for key in layer if key in _ARRAYS and key != "bias"})


_ARRAYS = ("weight", "scales", "biases", "bias")


def _cannot(where: str, why: str) -> LtxError:
    return LtxError(
        ErrorCode.INVALID_PARAMS,
        f"cannot split the transformer for tensor parallelism at {where}: {why}",
        "Use a number of ranks that divides the attention heads (and the quantization groups), or --parallel guidance.",
        field="distributed",
    )


class RowParallelLinear(nn.Module):
    """A linear layer whose input features are split over the ranks: partial products, one all-reduce, the bias."""

    def __init__(self, layer: nn.Module, group: mx.distributed.Group, where: str) -> None:
        super().__init__()
        bias = layer.pop("bias") if "bias" in layer else None
        _shard_rows(layer, group.rank(), group.size(), where)
        self.linear = layer
        if bias is not None:
            self.bias = bias
        self.group = group

    def __call__(self, x: mx.array) -> mx.array:
        y = mx.distributed.all_sum(self.linear(x), group=self.group)
        return y + self["bias"] if "bias" in self else y


def _sum_of_squares(x: mx.array) -> mx.array:
    f = x.astype(mx.float32)
    return mx.sum(f * f, axis=-1, keepdims=True)


class ShardedRMSNorm(nn.Module):
    """RMS norm over a width split across ranks: the sum of squares is all-reduced, the scale is this rank's slice.

    ``ShardedAttention`` hands q's and k's norms their all-reduced sums from ONE all-reduce (``reduced``); alone,
    the norm reduces its own."""

    def __init__(self, norm: nn.RMSNorm, group: mx.distributed.Group) -> None:
        super().__init__()
        self.full_width = norm.weight.shape[0]
        self.eps = norm.eps
        self.weight = _rank_slice(norm.weight, 0, group.rank(), group.size())
        self.group = group
        self.hand_over(None)

    def hand_over(self, squares: mx.array | None) -> None:
        object.__setattr__(self, "reduced", squares)  # a plain attribute, not a parameter of the module

    def __call__(self, x: mx.array) -> mx.array:
        squares = self.reduced
        self.hand_over(None)
        if squares is None or squares.shape[:-1] != x.shape[:-1]:
            squares = mx.distributed.all_sum(_sum_of_squares(x), group=self.group)
        f = x.astype(mx.float32)
        return (f * mx.rsqrt(squares / self.full_width + self.eps)).astype(x.dtype) * self.weight


class ShardedAttention(Attention):
    """``Attention`` over this rank's heads: the same code, with the RoPE tables cut to those heads and q's and k's
    RMS norms sharing one all-reduce of their sums of squares (reduced as soon as q and k are projected)."""

    rank: int
    ranks: int

    def _local(self, tables: RotaryTables | None) -> RotaryTables | None:
        if tables is None:
            return None
        axis = 2 if tables.split else -1  # split: (B, T, H, D/2); interleaved: (B, T, H*D)
        width = tables.cos.shape[axis] // self.ranks
        index = [slice(None)] * tables.cos.ndim
        index[axis] = slice(self.rank * width, (self.rank + 1) * width)
        return RotaryTables(tables.cos[tuple(index)], tables.sin[tuple(index)], tables.split)

    def _project(self, x: mx.array, context: mx.array | None) -> tuple[mx.array, mx.array, mx.array]:
        q, k, v = super()._project(x, context)
        # Lazy: if the norms are not applied (STG's values-only pass), this all-reduce is never evaluated, on
        # any rank, since every rank runs the same pass.
        squares = mx.distributed.all_sum(mx.concatenate([_sum_of_squares(q), _sum_of_squares(k)], axis=1),
                                         group=self.q_norm.group)  # fmt: skip
        self.q_norm.hand_over(squares[:, : q.shape[1]])
        self.k_norm.hand_over(squares[:, q.shape[1] :])
        return q, k, v

    def __call__(self, x, context=None, mask=None, pe=None, k_pe=None, values_only=False):
        try:
            return super().__call__(x, context, mask, self._local(pe), self._local(k_pe), values_only)
        finally:  # hold no graph between calls (a values-only pass does not use the handed-over sums)
            self.q_norm.hand_over(None)
            self.k_norm.hand_over(None)


def shard_attention(attention: Attention, group: mx.distributed.Group, where: str) -> None:
    """In place: `attention` becomes a ``ShardedAttention`` over this rank's heads."""
    rank, ranks = group.rank(), group.size()
    if attention.heads % ranks:
        raise _cannot(where, f"{attention.heads} heads do not split over {ranks} ranks")
    for name, segments in (("to_qkv", 3), ("to_kv", 2), ("to_q", 1), ("to_k", 1), ("to_v", 1), ("to_gate_logits", 1)):
        if name in attention:
            _shard_columns(attention[name], rank, ranks, segments, f"{where}.{name}")
    attention.q_norm = ShardedRMSNorm(attention.q_norm, group)
    attention.k_norm = ShardedRMSNorm(attention.k_norm, group)
    attention.to_out = RowParallelLinear(attention.to_out, group, f"{where}.to_out")
    attention.heads //= ranks
    attention.__class__ = ShardedAttention
    attention.rank, attention.ranks = rank, ranks


def shard_feed_forward(ff: FeedForward, group: mx.distributed.Group, where: str) -> None:
    _shard_columns(ff.proj_in, group.rank(), group.size(), 1, f"{where}.proj_in")
    ff.proj_out = RowParallelLinear(ff.proj_out, group, f"{where}.proj_out")


def shard_transformer(model: LTXModel, group: mx.distributed.Group) -> LTXModel:
    """Split `model`'s blocks over `group` in place (see the module docstring) and return it.

    Every rank must hold the same weights beforehand (they are loaded from the same files). Each block is
    evaluated right after it is split, so the full copies are released block by block, not all at the end.
    Fused or unfused projections both work; call ``model.fuse_projections()`` before or after.
    """
    if group.size() == 1:
        return model
    for index, block in enumerate(model.transformer_blocks):
        for name, module in list(block.children().items()):
            where = f"transformer_blocks.{index}.{name}"
            if isinstance(module, Attention) and not isinstance(module, ShardedAttention):
                shard_attention(module, group, where)
            elif isinstance(module, FeedForward) and not isinstance(module.proj_out, RowParallelLinear):
                shard_feed_forward(module, group, where)
        mx.eval(block.parameters())
    return model


def sharded_fraction(model: LTXModel) -> float:
    """The share of the transformer's weight bytes that tensor parallelism splits (the blocks' attentions and
    feed-forwards); the rest is replicated on every rank. Used by the memory planner."""
    from mlx.utils import tree_flatten

    total = split = 0
    for key, array in tree_flatten(model.parameters()):
        total += array.nbytes
        if key.startswith("transformer_blocks.") and ("attn" in key or ".ff." in key) and "norm" not in key:
            split += array.nbytes
    return split / total if total else 0.0
