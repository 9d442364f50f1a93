"""LoRA fusion against ltx-core 1.0.0's ``apply_loras`` (via ``SingleGPUModelBuilder(..., loras=...)``).

Fixtures from `tests/reference/make_lora_refs.py`: the tiny LTX-2.0 / LTX-2.3 transformers of the transformer parity
tests, two LoRAs (rank 4 at strength 0.7, rank 2 at -0.3) in four key spellings, the bf16 weights ltx-core fuses and
that model's float32 forward.

Tolerances. bf16: ltx-core rounds ``B * strength``, each product, the sum of the LoRAs and the fused weight to bf16
one after the other; we sum in float32 and round once. Each rounding moves a value by at most half a bf16 step of
the layer's largest value (2^-8 of it), so the fused weights may differ by about two such steps: we allow 2 and
measure at most 1.07. Quantized: the fused weight is the float fusion quantized afresh (load-time
quantization) or the stored codes dequantized, fused and requantized (pre-quantized layers). MLX's affine quantization
puts an element up to one step (|scale|) from its value (measured 0.98 steps on random data, as it keeps zero exactly
representable), so we allow one step of the new quantization, plus one of the old when the layer was stored
quantized, plus the reference's own bf16 rounding (BF16_STEPS).
"""

from __future__ import annotations

from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx.utils import tree_map
from parity import relative_error

from ltx_backend.errors import ErrorCode, LtxError
from ltx_backend.models.transformer import StreamInput
from ltx_backend.weights.checkpoint import open_checkpoint
from ltx_backend.weights.lora import (
    LoraSpec,
    apply_loras,
    check_loras_for_checkpoint,
    lora_deltas,
    lora_info,
    model_targets,
    our_layer,
    parse_lora_arg,
    read_lora,
    reference_downscale_factor,
    resident_key,
)
from ltx_backend.weights.transformer import load_transformer

FIXTURES = Path(__file__).parent / "fixtures"
LORAS = FIXTURES / "lora"
SPELLINGS = ("ltx", "comfyui", "kohya", "diffusers")
VERSIONS = ("t20", "t23")
STRENGTHS = (0.7, -0.3)
BF16_STEPS = 2.0  # see the module docstring
FORWARD_TOLERANCE = 2e-2  # bf16 weights that differ by at most one rounding step, float32 forward


def specs(version: str, spelling: str) -> list[LoraSpec]:
    return [
        LoraSpec(LORAS / f"{version}_lora{i}_{spelling}.safetensors", strength)
        for i, strength in zip((1, 2), STRENGTHS, strict=True)
    ]


def checkpoint(version: str):
    return open_checkpoint(FIXTURES / "transformer" / f"{version}_official")


def reference_fused(version: str) -> dict[str, mx.array]:
    return mx.load(str(LORAS / f"{version}_fused.safetensors"))


def fused_weight(model: nn.Module, ltx_layer: str) -> mx.array:
    """The weight rows of `ltx_layer` in `model` (stacked q/k/v resolved), dequantized if quantized."""
    target = model_targets(model)[our_layer(ltx_layer)]
    module = dict(model.named_modules())[target.module]
    if isinstance(module, nn.QuantizedLinear):
        weight = mx.dequantize(module.weight, module.scales, module.biases, module.group_size, module.bits)
        return weight[target.rows]
    return module.weight[target.rows]


def max_steps(ours: mx.array, reference: mx.array) -> float:
    """Largest |difference| in bf16 rounding steps (2^-8) of the layer's largest reference weight."""
    ref = np.array(reference.astype(mx.float32))
    diff = np.abs(np.array(ours.astype(mx.float32)) - ref)
    return float(np.max(diff) / (np.max(np.abs(ref)) * 2.0**-8))


@pytest.mark.parametrize("spelling", SPELLINGS)
@pytest.mark.parametrize("version", VERSIONS)
def test_fused_weights_match_ltx_core(version: str, spelling: str) -> None:
    model = load_transformer(checkpoint(version), mx.bfloat16, loras=specs(version, spelling))
    for layer, reference in reference_fused(version).items():
        assert max_steps(fused_weight(model, layer), reference) <= BF16_STEPS, layer


def _float32(model: nn.Module) -> None:
    model.update(tree_map(lambda a: a.astype(mx.float32) if mx.issubdtype(a.dtype, mx.floating) else a,
                          model.parameters()))  # fmt: skip


def _inputs(model, version: str) -> tuple[StreamInput, StreamInput]:
    refs = np.load(FIXTURES / "transformer" / "refs.npz")
    sigma = mx.array(refs["inputs.sigma"])

    def stream(kind: str) -> StreamInput:
        return StreamInput(
            latent=mx.array(refs[f"inputs.{kind}_latent"]),
            timesteps=mx.array(refs[f"inputs.{kind}_timesteps"]),
            sigma=sigma,
            context=mx.array(refs[f"{version}.text.{kind}_context"]),
            context_mask=None,
            rope=model.rope(refs[f"inputs.{kind}_positions"], kind),
        )

    return stream("video"), stream("audio")


@pytest.mark.parametrize("spelling", ("ltx", "diffusers"))
@pytest.mark.parametrize("version", VERSIONS)
def test_forward_with_loras_matches_ltx_core(version: str, spelling: str) -> None:
    model = load_transformer(checkpoint(version), mx.bfloat16, loras=specs(version, spelling))
    _float32(model)
    video, audio = model(*_inputs(model, version))
    refs = np.load(LORAS / "refs.npz")
    assert relative_error(video, refs[f"{version}.out.video"]) <= FORWARD_TOLERANCE
    assert relative_error(audio, refs[f"{version}.out.audio"]) <= FORWARD_TOLERANCE
    plain = load_transformer(checkpoint(version), mx.float32)
    plain_video, _ = plain(*_inputs(plain, version))
    assert relative_error(plain_video, refs[f"{version}.out.video"]) > 10 * FORWARD_TOLERANCE  # the LoRAs matter


def test_fusing_into_a_stacked_model_equals_fusing_before_stacking() -> None:
    before = load_transformer(checkpoint("t23"), mx.float32, loras=specs("t23", "ltx"))
    after = load_transformer(checkpoint("t23"), mx.float32)  # q/k/v already stacked
    assert apply_loras(after, specs("t23", "ltx")) > 0
    for layer in reference_fused("t23"):
        np.testing.assert_array_equal(np.array(fused_weight(after, layer)), np.array(fused_weight(before, layer)))


QUANT_GROUP = 32  # the tiny widths (40, 24) only divide 32-wide groups in the feed-forward output (160, 96 inputs)


def _quantizable(path: str, module: nn.Module) -> bool:
    return isinstance(module, nn.Linear) and path.endswith("proj_out") and module.weight.shape[1] % QUANT_GROUP == 0


def _ff_layers(version: str) -> dict[str, mx.array]:
    return {k: v for k, v in reference_fused(version).items() if k.endswith("net.2")}


def _scales(model: nn.Module, layer: str) -> np.ndarray:
    module = dict(model.named_modules())[model_targets(model)[our_layer(layer)].module]
    return np.repeat(np.abs(np.array(module.scales.astype(mx.float32))), module.group_size, axis=1)


def _bf16_allowance(reference: np.ndarray) -> float:
    """The reference's own bf16 arithmetic (see BF16_STEPS)."""
    return BF16_STEPS * 2.0**-8 * float(np.max(np.abs(reference)))


@pytest.mark.parametrize("bits", (4, 8))
def test_quantized_layers_fuse_within_the_quantization_steps(bits: int) -> None:
    """Pre-quantized layers: dequantize, fuse, requantize with the same bits / group size."""
    original = load_transformer(checkpoint("t20"), mx.float32)
    nn.quantize(original, QUANT_GROUP, bits, class_predicate=_quantizable)
    old_scales = {layer: _scales(original, layer) for layer in _ff_layers("t20")}
    apply_loras(original, specs("t20", "ltx"))
    assert _ff_layers("t20")
    for layer, reference in _ff_layers("t20").items():
        module = dict(original.named_modules())[our_layer(layer)]
        assert isinstance(module, nn.QuantizedLinear) and (module.bits, module.group_size) == (bits, QUANT_GROUP)
        ref = np.array(reference.astype(mx.float32))
        bound = old_scales[layer] + _scales(original, layer) + _bf16_allowance(ref)
        error = np.abs(np.array(fused_weight(original, layer).astype(mx.float32)) - ref)
        assert (error <= bound).all(), layer


def test_quantizing_after_fusion_is_within_one_step() -> None:
    """Load-time quantization: the exact fusion, quantized once (what load_transformer(quantize=...) does)."""
    model = load_transformer(checkpoint("t23"), mx.float32, loras=specs("t23", "kohya"))
    nn.quantize(model, QUANT_GROUP, 4, class_predicate=_quantizable)
    for layer, reference in _ff_layers("t23").items():
        ref = np.array(reference.astype(mx.float32))
        bound = _scales(model, layer) + _bf16_allowance(ref)
        error = np.abs(np.array(fused_weight(model, layer).astype(mx.float32)) - ref)
        assert (error <= bound).all(), layer


# --- mismatches: never a silent no-op ------------------------------------------------------------------------------


def _write(path: Path, tensors: dict[str, mx.array], metadata: dict | None = None) -> Path:
    mx.save_safetensors(str(path), tensors, metadata=metadata or {})
    return path


def _expect_mismatch(model, path: Path) -> LtxError:
    with pytest.raises(LtxError) as info:
        apply_loras(model, [LoraSpec(path, 1.0)])
    assert info.value.code is ErrorCode.LORA_MISMATCH
    return info.value


def test_lora_of_another_model_is_a_mismatch(tmp_path: Path) -> None:
    model = load_transformer(checkpoint("t20"), mx.float32)
    a, b = mx.zeros((4, 40)), mx.zeros((40, 4))
    flux = {  # Flux's single blocks: no such layers in LTX
        "transformer.single_transformer_blocks.0.attn.to_q.lora_A.weight": a,
        "transformer.single_transformer_blocks.0.attn.to_q.lora_B.weight": b,
        "transformer.single_transformer_blocks.1.attn.to_q.lora_A.weight": a,
        "transformer.single_transformer_blocks.1.attn.to_q.lora_B.weight": b,
    }
    error = _expect_mismatch(model, _write(tmp_path / "flux.safetensors", flux))
    assert "single_transformer_blocks.0.attn.to_q" in error.message and error.details["unmatched"] == 2
    assert "2 of its 2 layers" in error.message


def test_every_lora_is_checked_before_any_weight_changes(tmp_path: Path) -> None:
    model = load_transformer(checkpoint("t20"), mx.float32)
    before = np.array(fused_weight(model, "transformer_blocks.0.attn1.to_q"))
    bad = {
        "diffusion_model.nowhere.lora_A.weight": mx.ones((4, 40)),
        "diffusion_model.nowhere.lora_B.weight": mx.ones((40, 4)),
    }
    with pytest.raises(LtxError) as info:  # a good LoRA first, then a bad one
        apply_loras(model, [*specs("t20", "ltx"), LoraSpec(_write(tmp_path / "bad.safetensors", bad), 1.0)])
    assert info.value.code is ErrorCode.LORA_MISMATCH and "'nowhere'" in info.value.message
    np.testing.assert_array_equal(np.array(fused_weight(model, "transformer_blocks.0.attn1.to_q")), before)


def test_wrong_shapes_are_a_mismatch(tmp_path: Path) -> None:
    model = load_transformer(checkpoint("t20"), mx.float32)
    wide = {  # a 64-wide model's LoRA on the 40-wide tiny model
        "diffusion_model.transformer_blocks.0.attn1.to_q.lora_A.weight": mx.zeros((4, 64)),
        "diffusion_model.transformer_blocks.0.attn1.to_q.lora_B.weight": mx.zeros((64, 4)),
    }
    error = _expect_mismatch(model, _write(tmp_path / "wide.safetensors", wide))
    assert "transformer_blocks.0.attn1.to_q" in error.message and "40 x 40" in error.message


def test_ltx20_lora_on_ltx23_is_a_mismatch() -> None:
    """The LTX-2.0 LoRA 2 touches caption_projection.linear_1, which LTX-2.3 (projection before the connectors)
    does not have."""
    model = load_transformer(checkpoint("t23"), mx.float32)
    error = _expect_mismatch(model, LORAS / "t20_lora2_ltx.safetensors")
    assert "caption_projection.linear_1" in error.message and error.details["unmatched"] == 1


def test_half_a_pair_and_foreign_tensors_are_mismatches(tmp_path: Path) -> None:
    model = load_transformer(checkpoint("t20"), mx.float32)
    half = {"diffusion_model.transformer_blocks.0.attn1.to_q.lora_A.weight": mx.zeros((4, 40))}
    assert "one of its two" in _expect_mismatch(model, _write(tmp_path / "half.safetensors", half)).message
    full = {"model.diffusion_model.transformer_blocks.0.attn1.to_q.weight": mx.zeros((40, 40))}
    assert "not a LoRA tensor" in _expect_mismatch(model, _write(tmp_path / "full.safetensors", full)).message


def test_missing_lora_file_is_model_not_found(tmp_path: Path) -> None:
    with pytest.raises(LtxError) as info:
        read_lora(tmp_path / "nope.safetensors")
    assert info.value.code is ErrorCode.MODEL_NOT_FOUND


@pytest.mark.parametrize("spelling", SPELLINGS)
def test_lora_info(spelling: str) -> None:
    info = lora_info(LORAS / f"t23_lora1_{spelling}.safetensors")
    expected = {"ltx": "ltx-core", "comfyui": "comfyui", "kohya": "kohya", "diffusers": "diffusers"}[spelling]
    assert info["format"] == expected
    assert (info["rank"], info["layers"], info["blocks"]) == (4, 56, 2)
    assert info["streams"] == ["audio", "audio-video", "video"]
    assert info["target"] == "LTX-2 transformer (video width 40, audio width 24)"
    assert info["reference_downscale_factor"] == 2 and info["metadata"] == {"reference_downscale_factor": "2"}
    assert info["has_alpha"] is (spelling in ("comfyui", "kohya"))
    assert lora_info(LORAS / f"t20_lora2_{spelling}.safetensors")["reference_downscale_factor"] == 1


def test_lora_argument_and_resident_key(tmp_path: Path) -> None:
    assert parse_lora_arg("a/b.safetensors:0.7") == LoraSpec(Path("a/b.safetensors"), 0.7)
    assert parse_lora_arg("a/b.safetensors:-0.3").strength == -0.3
    assert parse_lora_arg("a/b.safetensors") == LoraSpec(Path("a/b.safetensors"), 1.0)
    assert parse_lora_arg("odd:name.safetensors") == LoraSpec(Path("odd:name.safetensors"), 1.0)
    path = tmp_path / "l.safetensors"
    path.write_bytes(b"x")
    key = resident_key([LoraSpec(path, 0.5)])
    assert key == resident_key([LoraSpec(path, 0.5)]) and key != resident_key([LoraSpec(path, 0.6)])
    path.write_bytes(b"xy")  # another file at the same path
    assert resident_key([LoraSpec(path, 0.5)]) != key
    with pytest.raises(LtxError) as info:
        resident_key([LoraSpec(tmp_path / "gone.safetensors", 1.0)])
    assert info.value.code is ErrorCode.MODEL_NOT_FOUND


def test_loras_are_checked_against_a_checkpoint_before_loading() -> None:
    checked = check_loras_for_checkpoint(checkpoint("t23"), specs("t23", "diffusers"))
    assert [len(matched) for _, matched in checked] == [56, 27]
    with pytest.raises(LtxError) as info:
        check_loras_for_checkpoint(checkpoint("t23"), specs("t20", "ltx"))
    assert info.value.code is ErrorCode.LORA_MISMATCH and "caption_projection.linear_1" in info.value.message


def test_reference_downscale_factor_of_several_loras(tmp_path: Path) -> None:
    ic = LORAS / "t23_lora1_ltx.safetensors"  # declares 2
    assert reference_downscale_factor([LoraSpec(LORAS / "t23_lora2_ltx.safetensors"), LoraSpec(ic)]) == 2
    assert reference_downscale_factor([LoraSpec(LORAS / "t23_lora2_ltx.safetensors")]) == 1
    other = _write(tmp_path / "x4.safetensors", {"diffusion_model.a.lora_A.weight": mx.zeros((1, 1)),
                                                 "diffusion_model.a.lora_B.weight": mx.zeros((1, 1))},
                   {"reference_downscale_factor": "4"})  # fmt: skip
    with pytest.raises(LtxError) as info:
        reference_downscale_factor([LoraSpec(ic), LoraSpec(other)])
    assert info.value.code is ErrorCode.INVALID_PARAMS


def test_lora_info_names_the_version_where_the_layers_tell() -> None:
    assert lora_info(LORAS / "t20_lora2_kohya.safetensors")["target"].startswith("LTX-2.0 transformer")
    assert lora_info(LORAS / "t23_lora2_diffusers.safetensors")["target"] == "LTX-2.3 transformer (video width 40)"


def test_adding_a_lora_later_equals_fusing_both_at_once() -> None:
    """The two-stage dev flow fuses the distilled LoRA on top of the user's for stage 2: one apply_loras on the
    stage-1 model (stacked) gives the weights of fusing both from the start."""
    one, two = specs("t20", "ltx")
    later = load_transformer(checkpoint("t20"), mx.float32, loras=[one])
    apply_loras(later, [two])
    both = load_transformer(checkpoint("t20"), mx.float32, loras=[one, two])
    for layer in reference_fused("t20"):
        np.testing.assert_allclose(
            np.array(fused_weight(later, layer)), np.array(fused_weight(both, layer)), atol=1e-6, err_msg=layer
        )


def test_fusing_holds_one_layer_at_a_time(tmp_path: Path) -> None:
    """Each layer's float32 delta is released once it is fused: the peak above the model is about one layer's work,
    not the sum of every delta (which was twice a bf16 model: an out-of-memory on an 80 GB GPU). Widths of 512, so
    that the layers, not the LoRA's own small matrices, set the peak."""
    from mlx.utils import tree_flatten

    from ltx_backend.models.transformer import LTXModel, TransformerConfig
    from ltx_backend.tiny import _sections, random_lora

    wide = {"num_attention_heads": 8, "attention_head_dim": 64, "cross_attention_dim": 512, "num_layers": 4}
    model = LTXModel(TransformerConfig.from_section({**_sections("2.3")["transformer"], **wide}))
    mx.eval(model.parameters())
    path = tmp_path / "wide.safetensors"
    mx.save_safetensors(str(path), random_lora(model, rank=2, seed=0, every=1))
    spec = [LoraSpec(path, 0.5)]
    largest = max(dict(model.named_modules())[p].weight.nbytes for p in lora_deltas(model, spec))
    model_bytes = sum(v.nbytes for _, v in tree_flatten(model.parameters()))
    base = mx.get_active_memory()
    mx.reset_peak_memory()
    assert apply_loras(model, spec) > 0
    peak_above = mx.get_peak_memory() - base
    assert peak_above <= 3 * largest and peak_above < model_bytes / 4, (peak_above, largest, model_bytes)
