"""4- and 8-bit transformers: load-time quantization and pre-quantized split checkpoints.

There is no quantized reference in ltx-core; the reference is MLX's own dequantization of the same weights: a
quantized model must compute what a float model holding the dequantized weights computes.
"""

from __future__ import annotations

import json
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx.utils import tree_flatten

from ltx_backend.models.quantized_linear import DequantizingLinear, dequantize_large_products
from ltx_backend.models.rope import audio_positions, video_positions
from ltx_backend.models.transformer import LTXModel, StreamInput, TransformerConfig
from ltx_backend.weights.checkpoint import open_checkpoint
from ltx_backend.weights.transformer import load_transformer, quantizable_layer

SECTION = {  # widths that are multiples of the 64-wide quantization groups, 2 blocks
    "num_attention_heads": 2, "attention_head_dim": 32, "in_channels": 16, "out_channels": 16, "num_layers": 2,
    "cross_attention_dim": 64, "caption_channels": 64, "audio_num_attention_heads": 2, "audio_attention_head_dim": 32,
    "audio_in_channels": 8, "audio_out_channels": 8, "audio_cross_attention_dim": 64, "rope_type": "split",
    "frequencies_precision": "float64", "apply_gated_attention": True,
}  # fmt: skip


def write_split(root: Path, weights: dict[str, mx.array], quantized_bits: int | None = None) -> Path:
    root.mkdir(parents=True)
    mx.save_safetensors(str(root / "transformer.safetensors"), weights)
    manifest = {"format": "split", "model_version": "2.0.0", "components": ["transformer"]}
    if quantized_bits:
        manifest.update(quantized=True, quantization_bits=quantized_bits, quantization_group_size=64)
    (root / "split_model.json").write_text(json.dumps(manifest))
    (root / "embedded_config.json").write_text(json.dumps({"transformer": SECTION}))
    return root


def inputs(model: LTXModel) -> tuple[StreamInput, StreamInput]:
    key = iter(mx.random.split(mx.random.key(5), 4))
    sigma = mx.array([0.6])
    video = StreamInput(
        mx.random.normal((1, 12, 16), key=next(key)), mx.full((1, 12), 0.6), sigma,
        mx.random.normal((1, 128, 64), key=next(key)), None, model.rope(video_positions(2, 2, 3, 24.0), "video"),
    )  # fmt: skip
    audio = StreamInput(
        mx.random.normal((1, 5, 8), key=next(key)), mx.full((1, 5), 0.6), sigma,
        mx.random.normal((1, 128, 64), key=next(key)), None, model.rope(audio_positions(5), "audio"),
    )  # fmt: skip
    return video, audio


def dequantized_copy(model: LTXModel) -> LTXModel:
    """A float model holding MLX's dequantization of every quantized layer of `model`."""
    params = dict(tree_flatten(model.parameters()))
    quantized = {path for path, module in model.named_modules() if isinstance(module, nn.QuantizedLinear)}
    pairs = []
    for key, value in params.items():
        path, _, leaf = key.rpartition(".")
        if path in quantized and leaf in ("scales", "biases"):
            continue
        if path in quantized and leaf == "weight":
            layer = model
            for part in path.split("."):
                layer = layer[int(part)] if part.isdigit() else layer[part]
            value = mx.dequantize(value, layer.scales, layer.biases, layer.group_size, layer.bits)
        pairs.append((key, value))
    copy = LTXModel(TransformerConfig.from_section(SECTION))
    copy.fuse_projections()  # the loaded model's layout
    copy.load_weights(pairs, strict=True)
    return copy


@pytest.mark.parametrize("bits", [4, 8])
def test_quantized_transformer_matches_its_dequantized_weights(tmp_path: Path, bits: int) -> None:
    mx.random.seed(11)
    source = LTXModel(TransformerConfig.from_section(SECTION))
    ckpt = open_checkpoint(write_split(tmp_path / "bf16", dict(tree_flatten(source.parameters()))))
    model = load_transformer(ckpt, mx.float32, quantize=bits)
    layers = [path for path, module in model.named_modules() if isinstance(module, nn.QuantizedLinear)]
    # per block: 2 self-attentions x (qkv, out), 4 cross-attentions x (q, kv, out), 2 feed-forwards x (in, out)
    assert len(layers) == 2 * (2 * 2 + 4 * 3 + 2 * 2)
    assert not any("gate_logits" in path or "adaln" in path for path in layers)

    video, audio = inputs(model)
    quantized = model(video, audio)
    reference = dequantized_copy(model)(video, audio)
    full = source(video, audio)
    for ours, ref, exact in zip(quantized, reference, full, strict=True):
        peak = float(mx.abs(ref).max())
        assert float(mx.abs(ours - ref).max()) / peak <= 1e-4
        # and quantization itself stays a small perturbation of the float model
        assert float(mx.abs(ours - exact).max()) / float(mx.abs(exact).max()) <= (0.2 if bits == 4 else 0.02)


def test_prequantized_split_checkpoint_loads_as_stored(tmp_path: Path) -> None:
    mx.random.seed(12)
    quantized = LTXModel(TransformerConfig.from_section(SECTION))  # quantized as MLX conversions store it
    nn.quantize(quantized, group_size=64, bits=4, class_predicate=quantizable_layer)
    stored = dict(tree_flatten(quantized.parameters()))
    assert stored["transformer_blocks.0.attn1.to_q.weight"].dtype == mx.uint32

    ckpt = open_checkpoint(write_split(tmp_path / "q4", stored, quantized_bits=4))
    assert ckpt.quantization == {"bits": 4, "group_size": 64}
    loaded = load_transformer(ckpt, mx.float32)
    quantized.fuse_projections()  # as the loader does
    video, audio = inputs(loaded)
    for a, b in zip(loaded(video, audio), quantized(video, audio), strict=True):
        np.testing.assert_array_equal(np.array(a), np.array(b))


@pytest.mark.parametrize("bits", [4, 8])
def test_dequantized_products_match_the_quantized_kernels(tmp_path: Path, bits: int) -> None:
    """GPUs multiply many rows through dequantized weights (DequantizingLinear): the same outputs as qmm."""
    mx.random.seed(13)
    source = LTXModel(TransformerConfig.from_section(SECTION))
    model = load_transformer(open_checkpoint(write_split(tmp_path / "bf16", dict(tree_flatten(source.parameters())))),
                             mx.float32, quantize=bits)  # fmt: skip
    video, audio = inputs(model)
    expected = model(video, audio)
    rows = video.latent.shape[1]
    assert dequantize_large_products(model, min_rows=rows) == 2 * (2 * 2 + 4 * 3 + 2 * 2)
    layer = model.transformer_blocks[0].ff.proj_in
    assert isinstance(layer, DequantizingLinear) and layer.min_rows == rows
    for got, want in zip(model(video, audio), expected, strict=True):  # video rows dequantized, audio rows not
        np.testing.assert_allclose(np.array(got), np.array(want), rtol=1e-5, atol=1e-5)
