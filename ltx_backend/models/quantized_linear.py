"""Quantized layers that multiply large batches through their dequantized weights.

MLX's CUDA quantized matmul is built for few rows (decoding): at the transformer's 1536-6144 video tokens it
runs far below the bf16 GEMM. H100, LTX-2.3 Q4 forward, 1536 | 6144 video tokens: 0.388 | 1.407 s with the
quantized kernels, 0.146 | 0.400 s dequantizing (bf16 weights: 0.120 | 0.383 s); peak 15.3 -> 15.8 GB.
Dequantizing a layer's weights costs a few hundredths of a millisecond, so for many rows the layer dequantizes
per call and multiplies in the activations' dtype. The weights stay quantized in memory; only one block's
dequantized copies exist at a time, as temporaries.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_map_with_path


class DequantizingLinear(nn.QuantizedLinear):
    """``nn.QuantizedLinear`` that dequantizes its weights for inputs of at least ``min_rows`` rows."""

    min_rows: int = 512

    @classmethod
    def from_quantized(cls, layer: nn.QuantizedLinear, min_rows: int) -> DequantizingLinear:
        converted = cls.__new__(cls)
        nn.Module.__init__(converted)
        converted.__dict__.update(vars(layer))  # group_size, bits, mode, training flags
        dict.update(converted, layer)  # the arrays: weight, scales, biases, bias
        converted.min_rows = min_rows
        return converted

    def __call__(self, x: mx.array) -> mx.array:
        if x.size // x.shape[-1] < self.min_rows:
            return super().__call__(x)
        weight = mx.dequantize(
            self["weight"], self["scales"], self.get("biases"), self.group_size, self.bits, mode=self.mode,
            dtype=x.dtype,
        )  # fmt: skip
        if "bias" in self:
            return mx.addmm(self["bias"], x, weight.T)
        return x @ weight.T


def dequantize_large_products(module: nn.Module, min_rows: int = DequantizingLinear.min_rows) -> int:
    """Turn every affine ``nn.QuantizedLinear`` of `module` into a ``DequantizingLinear``, the way
    ``nn.quantize`` swaps layers; returns how many."""
    replaced = 0

    def convert(_: str, layer: nn.Module) -> nn.Module:
        nonlocal replaced
        if type(layer) is not nn.QuantizedLinear or getattr(layer, "mode", "affine") != "affine":
            return layer
        replaced += 1
        return DequantizingLinear.from_quantized(layer, min_rows)

    module.update_modules(tree_map_with_path(convert, module.leaf_modules(), is_leaf=nn.Module.is_module))
    return replaced
