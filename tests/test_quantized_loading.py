"""Quantized components and checkpoint dtypes through the generic loader."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx.utils import tree_flatten

from ltx_backend.weights.audio import load_vocoder
from ltx_backend.weights.checkpoint import open_checkpoint
from ltx_backend.weights.load import load_module, quantize_like

FIXTURES = Path(__file__).parent / "fixtures" / "audio"


class TinyBlock(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.to_q = nn.Linear(64, 128)
        self.ff = nn.Linear(128, 64)
        self.gate = nn.Linear(64, 8)  # left in float, as converters leave small gate layers


def _write_split(root: Path, weights: dict[str, mx.array], bits: int, group_size: int) -> None:
    root.mkdir()
    mx.save_safetensors(str(root / "transformer.safetensors"), weights)
    manifest = {"format": "split", "components": ["transformer"], "quantized": True,
                "quantization_bits": bits, "quantization_group_size": group_size}  # fmt: skip
    (root / "split_model.json").write_text(json.dumps(manifest))


def test_prequantized_split_component_loads_exactly(tmp_path: Path) -> None:
    mx.random.seed(0)
    source = TinyBlock()
    nn.quantize(source, group_size=64, bits=4, class_predicate=lambda path, layer: path != "gate")
    stored = dict(tree_flatten(source.parameters()))
    assert stored["to_q.weight"].dtype == mx.uint32 and "to_q.scales" in stored and "gate.scales" not in stored
    _write_split(tmp_path / "q4", stored, bits=4, group_size=64)

    ckpt = open_checkpoint(tmp_path / "q4")
    assert ckpt.quantization == {"bits": 4, "group_size": 64}
    component = ckpt.component("transformer")
    assert component.quantized_paths == {"to_q", "ff"}

    model = TinyBlock()
    quantize_like(model, component, lambda key: key, bits=4, group_size=64)
    assert isinstance(model.to_q, nn.QuantizedLinear) and isinstance(model.gate, nn.Linear)
    load_module(model, component)
    x = mx.random.normal((3, 64))
    for layer in ("to_q", "ff", "gate"):
        inputs = x if layer != "ff" else source.to_q(x)
        np.testing.assert_array_equal(np.array(getattr(model, layer)(inputs)), np.array(getattr(source, layer)(inputs)))

    as_bf16 = TinyBlock()
    quantize_like(as_bf16, component, lambda key: key, bits=4, group_size=64)
    load_module(as_bf16, component, dtype=mx.bfloat16)
    loaded = dict(tree_flatten(as_bf16.parameters()))
    assert loaded["to_q.weight"].dtype == mx.uint32  # packed weights are never cast
    assert loaded["to_q.scales"].dtype == loaded["gate.weight"].dtype == mx.bfloat16


def test_bf16_checkpoint_loads_in_its_own_dtype(tmp_path: Path) -> None:
    root = tmp_path / "bf16"
    shutil.copytree(FIXTURES / "ltx20_unified", root)
    weights = mx.load(str(root / "model.safetensors"))
    mx.save_safetensors(str(root / "model.safetensors"), {k: v.astype(mx.bfloat16) for k, v in weights.items()})

    vocoder = load_vocoder(open_checkpoint(root))
    assert {v.dtype for _, v in tree_flatten(vocoder.parameters())} == {mx.bfloat16}
    as_float = load_vocoder(open_checkpoint(root), dtype=mx.float32)
    assert {v.dtype for _, v in tree_flatten(as_float.parameters())} == {mx.float32}


def test_split_transformer_file_named_by_variant(tmp_path: Path) -> None:
    """Later mlx-forge versions write transformer-distilled.safetensors (or -dev) for the listed 'transformer'."""
    root = tmp_path / "forge"
    _write_split(root, {"to_q.weight": mx.zeros((8, 8))}, bits=4, group_size=64)
    (root / "transformer.safetensors").rename(root / "transformer-distilled.safetensors")
    ckpt = open_checkpoint(root)
    assert ckpt.has("transformer") and "to_q.weight" in ckpt.component("transformer").tensors
