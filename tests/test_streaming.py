"""Block streaming and mixed-precision packs: streamed weights compute exactly what resident weights compute.

The reference for streaming is the resident model of the same checkpoint (same bytes of output); for mixed
precision, a float model holding MLX's dequantization of every layer (as for the uniform 4/8-bit packs).
"""

from __future__ import annotations

from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx.utils import tree_flatten, tree_map_with_path

from ltx_backend.errors import ErrorCode, LtxError
from ltx_backend.models.transformer import LTXModel, StreamInput, TransformerConfig
from ltx_backend.pipeline import sampler as s
from ltx_backend.tiny import write_tiny_model
from ltx_backend.weights.checkpoint import open_checkpoint
from ltx_backend.weights.mixed_quant import bit_histogram, detect_layer_quantization
from ltx_backend.weights.streaming import BlockStream, kept_indices, load_streamed_transformer
from ltx_backend.weights.transformer import load_transformer, quantizable_layer, transformer_quantization
from tests.test_transformer_quantized import SECTION, inputs, write_split


def _same(a: tuple, b: tuple) -> None:
    for x, y in zip(a, b, strict=True):
        assert x.dtype == y.dtype
        assert np.array(x).tobytes() == np.array(y).tobytes()


@pytest.fixture(scope="module")
def packs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("packs")
    mx.random.seed(31)
    source = LTXModel(TransformerConfig.from_section(SECTION))
    bf16 = {k: v.astype(mx.bfloat16) for k, v in tree_flatten(source.parameters())}
    nn.quantize(source, group_size=64, bits=4, class_predicate=quantizable_layer)
    q4 = dict(tree_flatten(source.parameters()))
    return {
        "bf16": write_split(root / "bf16", bf16),
        "q4": write_split(root / "q4", q4, quantized_bits=4),
        "mixed": write_tiny_model(root / "mixed", "2.3", mixed=True),
    }


def _tiny_inputs(model: LTXModel) -> tuple[StreamInput, StreamInput]:
    c = model.config
    key = iter(mx.random.split(mx.random.key(7), 4))
    sigma = mx.array([0.7])
    video = StreamInput(
        mx.random.normal((1, 12, c.in_channels), key=next(key)), mx.full((1, 12), 0.7), sigma,
        mx.random.normal((1, 16, c.video_dim), key=next(key)), None,
        model.rope(s.video_positions(2, 2, 3, 24.0), "video"),
    )  # fmt: skip
    audio = StreamInput(
        mx.random.normal((1, 5, c.audio_in_channels), key=next(key)), mx.full((1, 5), 0.7), sigma,
        mx.random.normal((1, 16, c.audio_dim), key=next(key)), None, model.rope(s.audio_positions(5), "audio"),
    )  # fmt: skip
    return video, audio


def _inputs_for(name: str, model: LTXModel):
    return _tiny_inputs(model) if name == "mixed" else inputs(model)


@pytest.mark.parametrize("name", ["bf16", "q4", "mixed"])
def test_streamed_forward_is_byte_identical_to_resident(packs: dict[str, Path], name: str) -> None:
    ckpt = open_checkpoint(packs[name])
    resident = load_transformer(ckpt, mx.float32)
    streamed = load_streamed_transformer(ckpt, mx.float32)
    video, audio = _inputs_for(name, resident)
    expected = resident(video, audio)
    _same(streamed(video, audio), expected)
    _same(streamed(video, audio), expected)  # a second forward reads every block again
    assert dict(streamed.block_stream.stats.reads) == {0: 2, 1: 2}
    # compiled blocks (the GPU path) take the streamed weights as inputs: still the same bytes, whole or in halves
    _same(streamed(video, audio, compiled=streamed.compiled_blocks()), expected)
    _same(streamed(video, audio, compiled=streamed.compiled_blocks(split=True), eval_every=1, in_flight=1), expected)
    assert dict(streamed.block_stream.stats.reads) == {0: 4, 1: 4}  # each block read once per forward, not per half


def test_streamed_model_holds_only_the_non_block_weights(packs: dict[str, Path]) -> None:
    ckpt = open_checkpoint(packs["bf16"])
    streamed = load_streamed_transformer(ckpt, mx.float32)
    resident = load_transformer(ckpt, mx.float32)
    mx.eval(resident.parameters())
    shells = {id(block) for block in streamed.transformer_blocks}
    assert len(shells) == 1  # one structure: one shell for both blocks
    outside = {k: v for k, v in tree_flatten(streamed.parameters()) if not k.startswith("transformer_blocks.")}
    block_bytes = sum(streamed.block_stream.block_bytes)
    resident_bytes = sum(v.nbytes for _, v in tree_flatten(resident.parameters()))
    stored_outside = sum(v.nbytes for v in outside.values())
    assert stored_outside + block_bytes * 2 == resident_bytes  # bf16 stored, float32 loaded: twice the bytes


def test_guided_step_reads_each_block_once(packs: dict[str, Path]) -> None:
    """CFG + STG + modality guidance run four passes per step: the blocks are still read once per step, and the
    guided result is the resident model's, byte for byte."""
    ckpt = open_checkpoint(packs["q4"])
    results, reads = [], None
    for model in (load_transformer(ckpt, mx.float32), load_streamed_transformer(ckpt, mx.float32)):
        video_in, audio_in = inputs(model)
        video = s.initial_state(video_in.latent, s.video_positions(2, 2, 3, 24.0), mx.float32)
        audio = s.initial_state(audio_in.latent, s.audio_positions(5), mx.float32)
        stage = s.StageInputs.build(model, video, audio, video_in.context, audio_in.context, mx.float32)
        params = s.GuidanceParams(cfg_scale=3.0, stg_scale=1.0, stg_blocks=(1,), rescale_scale=0.7, modality_scale=3.0)
        denoise = s.guided_denoiser(stage, video_in.context * 0.5, audio_in.context * 0.5, params, params)
        v, a = s.euler_loop((1.0, 0.6, 0.3, 0.0), video, audio, denoise)
        results.append((v.latent, a.latent))
        if model.block_stream is not None:
            reads = dict(model.block_stream.stats.reads)
    _same(results[1], results[0])
    assert reads == {0: 3, 1: 3}  # three steps, four passes each


def test_block_transform_sees_unstacked_weights(packs: dict[str, Path]) -> None:
    """The LoRA hook: a change made per block on the way in equals the same change made to resident weights."""
    ckpt = open_checkpoint(packs["bf16"])
    seen = []

    def add_delta(index: int, weights: dict[str, mx.array]) -> dict[str, mx.array]:
        seen.append(sorted(k for k in weights if k.startswith("attn1.")))
        return {**weights, "attn1.to_q.weight": weights["attn1.to_q.weight"] + 0.01 * (index + 1)}

    streamed = load_streamed_transformer(ckpt, mx.float32, block_transform=add_delta)
    resident = load_transformer(ckpt, mx.float32)
    for index, block in enumerate(resident.transformer_blocks):
        qkv = block.attn1.to_qkv.weight
        rows = qkv.shape[0] // 3
        block.attn1.to_qkv.weight = mx.concatenate([qkv[:rows] + 0.01 * (index + 1), qkv[rows:]])
    video, audio = inputs(resident)
    _same(streamed(video, audio), resident(video, audio))
    assert "attn1.to_q.weight" in seen[0] and "attn1.to_qkv.weight" not in seen[0]


def test_mixed_precision_pack_matches_its_dequantized_weights(packs: dict[str, Path]) -> None:
    ckpt = open_checkpoint(packs["mixed"])
    layers = transformer_quantization(ckpt)
    assert {q.bits for q in layers.values()} == {2, 3, 4, 5, 6, 8}
    assert {q.group_size for q in layers.values()} == {32, 64}
    assert sum(bit_histogram(layers).values()) == len(layers)
    model = load_transformer(ckpt, mx.float32)
    for path, q in layers.items():
        owner, _, name = path.rpartition(".")
        module = dict(model.named_modules()).get(path)
        if module is None:  # stacked into to_qkv / to_kv with layers of the same bits
            fused = dict(model.named_modules())[owner + (".to_qkv" if name == "to_q" else ".to_kv")]
            assert fused.bits == q.bits
            continue
        assert (module.bits, module.group_size) == (q.bits, q.group_size)
    # q is 8-bit and k/v are not: self-attention stacks only k/v
    block = model.transformer_blocks[0]
    assert "to_kv" in block.attn1 and "to_q" in block.attn1 and "to_qkv" not in block.attn1

    video, audio = _tiny_inputs(model)
    got = model(video, audio)
    mx.eval(got)
    _dequantize_in_place(model)
    assert not any(isinstance(m, nn.QuantizedLinear) for _, m in model.named_modules())
    for ours, ref in zip(got, model(video, audio), strict=True):
        assert float(mx.abs(ours - ref).max()) / float(mx.abs(ref).max()) <= 1e-4


def _dequantize_in_place(model: LTXModel) -> None:
    """Every quantized layer replaced by a float linear holding MLX's dequantization of its weights."""

    def convert(_: str, layer: nn.Module) -> nn.Module:
        if not isinstance(layer, nn.QuantizedLinear):
            return layer
        weight = mx.dequantize(layer.weight, layer.scales, layer.biases, layer.group_size, layer.bits)
        linear = nn.Linear(weight.shape[1], weight.shape[0], bias="bias" in layer)
        linear.weight = weight
        if "bias" in layer:
            linear.bias = layer.bias
        return linear

    model.update_modules(tree_map_with_path(convert, model.leaf_modules(), is_leaf=nn.Module.is_module))


def test_shapes_no_quantization_explains_are_refused(packs: dict[str, Path], tmp_path: Path) -> None:
    ckpt = open_checkpoint(packs["q4"])
    component = ckpt.component("transformer")
    key = "transformer_blocks.0.ff.proj_in.scales"
    info = component.tensors[key]
    component.tensors[key] = type(info)(info.file, info.name, (info.shape[0], 3), info.dtype, info.offset)
    model = LTXModel(TransformerConfig.from_section(SECTION))
    with pytest.raises(LtxError) as caught:
        detect_layer_quantization(model, component, lambda k: k)
    assert caught.value.code is ErrorCode.WEIGHTS_SHAPE_MISMATCH
    assert "transformer_blocks.0.ff.proj_in" in caught.value.message and "scales [256, 3]" in caught.value.message


def test_streamed_dequantizing_layers_match_resident(packs: dict[str, Path]) -> None:
    """The CUDA path (models/quantized_linear.py) swaps the shells' layers: streamed weights flow through them."""
    from ltx_backend.models.quantized_linear import dequantize_large_products

    ckpt = open_checkpoint(packs["mixed"])
    resident, streamed = load_transformer(ckpt, mx.float32), load_streamed_transformer(ckpt, mx.float32)
    for model in (resident, streamed):
        assert dequantize_large_products(model, min_rows=8) > 0
    video, audio = _tiny_inputs(resident)
    _same(streamed(video, audio), resident(video, audio))


def test_a_file_truncated_while_streaming_is_a_clear_error(packs: dict[str, Path], tmp_path: Path) -> None:
    import shutil

    root = shutil.copytree(packs["q4"], tmp_path / "q4")
    streamed = load_streamed_transformer(open_checkpoint(root), mx.float32)
    video, audio = inputs(streamed)
    mx.eval(streamed(video, audio))
    path = root / "transformer.safetensors"
    with path.open("r+b") as handle:
        handle.truncate(path.stat().st_size // 2)
    with pytest.raises(LtxError) as caught:
        mx.eval(streamed(video, audio))
    assert caught.value.code is ErrorCode.CHECKPOINT_CORRUPT and "truncated" in caught.value.message


def test_kept_blocks_are_spread_over_the_model() -> None:
    assert kept_indices(48, 0) == frozenset()
    assert kept_indices(48, 24) == frozenset(range(0, 48, 2))  # every other block: each read overlaps a kept one
    assert kept_indices(48, 12) == frozenset(range(0, 48, 4))
    assert kept_indices(4, 3) == frozenset({0, 1, 2})
    assert kept_indices(2, 5) == frozenset({0, 1})  # never more than there are


@pytest.mark.parametrize("name", ["bf16", "mixed"])
def test_kept_blocks_are_read_once_and_compute_the_same(packs: dict[str, Path], name: str) -> None:
    """A streamed model holding one of its two blocks reads that block once, the other one every forward, and
    computes the resident model's bytes each time."""
    ckpt = open_checkpoint(packs[name])
    resident = load_transformer(ckpt, mx.float32)
    streamed = load_streamed_transformer(ckpt, mx.float32, kept_blocks=1)
    video, audio = _inputs_for(name, resident)
    expected = resident(video, audio)
    for _ in range(3):
        _same(streamed(video, audio), expected)
    assert dict(streamed.block_stream.stats.reads) == {0: 1, 1: 3}
    _same(streamed(video, audio, compiled=streamed.compiled_blocks()), expected)
    assert dict(streamed.block_stream.stats.reads) == {0: 1, 1: 4}


@pytest.mark.parametrize("name", ["bf16", "q4", "mixed"])
def test_lane_reads_compute_the_same_as_pread_reads(packs: dict[str, Path], name: str) -> None:
    """CUDA's reads (MLX's `Load` on the parallel-load lanes, each lane's load made anew once its tensors were
    handed out) give the bytes of the `pread` reads, forward after forward, each block read once per forward."""
    ckpt = open_checkpoint(packs[name])
    resident = load_transformer(ckpt, mx.float32)
    streamed = load_streamed_transformer(ckpt, mx.float32)
    stream = streamed.block_stream
    streamed.block_stream = BlockStream(stream._blocks, stream.transform, stream.keep, lane_reads=True)
    video, audio = _inputs_for(name, resident)
    expected = resident(video, audio)
    for _ in range(3):
        _same(streamed(video, audio), expected)
    assert dict(streamed.block_stream.stats.reads) == {0: 3, 1: 3}


def test_a_file_truncated_while_lane_reads_stream_it_is_a_clear_error(packs: dict[str, Path], tmp_path: Path) -> None:
    import shutil

    folder = tmp_path / "copy"
    shutil.copytree(packs["bf16"], folder)
    ckpt = open_checkpoint(folder)
    streamed = load_streamed_transformer(ckpt, mx.float32)
    stream = streamed.block_stream
    streamed.block_stream = BlockStream(stream._blocks, stream.transform, stream.keep, lane_reads=True)
    video, audio = inputs(streamed)
    path = next(folder.glob("transformer*.safetensors"))
    with path.open("r+b") as handle:  # cut the file inside the last block's tensors
        handle.truncate(path.stat().st_size // 2)
    with pytest.raises(LtxError) as caught:
        mx.eval(streamed(video, audio))
    assert caught.value.code == ErrorCode.CHECKPOINT_CORRUPT and str(path) in caught.value.message
