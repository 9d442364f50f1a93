"""The transformer and text-processor loaders against the key listings of the real LTX-2 checkpoints, without weights.

For each manifest a data-less checkpoint is built from the listing (the fixtures store the 48 transformer blocks and
the connector blocks compressed; `load_manifest` expands them), the full-size `LTXModel` and `TextEmbeddingsProcessor`
are built lazily from the checkpoint's config (nothing is evaluated), the pre-quantized layers of the q4 split repo
are swapped in as `load_transformer` does, and both loads are planned. Every stored transformer, connector and
text-projection tensor must feed exactly one parameter of one of the two modules, except the connector copies that
the unified file also keeps under ``transformer.``, which neither reads; every parameter must be fed; the shapes must
agree; and the parameter counts must equal the manifest summaries. The mlx-forge variants of the split repo are
synthesized from the listing and must plan too.

The split repo's ``embedded_config.json`` spells the LTX-2.3 text projection only as
``caption_projection_first_linear/second_linear: false`` (no ``caption_proj_before_connector``):
`test_split_config_spelling_is_understood` checks that it yields the same configs as the official 2.3 header.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import mlx.nn as nn
import pytest
from manifest_checkpoint import (
    LTX_MANIFESTS,
    check_plan,
    join_files,
    load_manifest,
    manifest_checkpoint,
    param_count,
    split_files,
    stored_keys,
    used_keys,
)

import ltx_backend.weights.transformer as transformer_loader
from ltx_backend.models.text_connector import TextEmbeddingsProcessor, TextProcessorConfig, sanitize_processor_key
from ltx_backend.models.transformer import LTXModel, TransformerConfig, sanitize_transformer_key
from ltx_backend.weights.checkpoint import Checkpoint, Component
from ltx_backend.weights.load import build_from_config, plan_module, quantize_like
from ltx_backend.weights.plan import LoadPlan
from ltx_backend.weights.transformer import (
    _text_component,
    load_text_processor,
    load_transformer,
    text_processor_config,
    transformer_section,
)

# Parameter counts (manifest summaries: ltx_core modules built on the meta device). The unified file is mlx_video's
# conversion of the official LTX-2.0 file: the same modules, with no count of its own in its summary.
TRANSFORMER_PARAMS = {"2.0": 18_876_174_592, "2.3": 18_988_838_144}
PROCESSOR_PARAMS = {"2.0": 1_431_475_200, "2.3": 3_172_227_584}
Q4_TRANSFORMER_ELEMENTS = 3_360_861_440  # stored elements of the split transformer.safetensors (uint32 words count 1)
Q4_LAYERS_PER_BLOCK = 28  # to_q/to_k/to_v/to_out of 6 attentions + ff and audio_ff proj_in/proj_out
GATES_PER_BLOCK = 6  # to_gate_logits of the 6 attentions of an LTX-2.3 block
TEXT_COMPONENTS = ("transformer", "connector", "text_embedding_projection")
CONNECTORS = ("video_embeddings_connector.", "audio_embeddings_connector.")
SPLIT = "ltx-2.3-mlx-q4-split"


@dataclass
class TransformerPlans:
    ckpt: Checkpoint
    model: LTXModel
    plan: LoadPlan
    processor: TextEmbeddingsProcessor
    processor_plan: LoadPlan
    text: Component  # what `load_text_processor` plans against (`_text_component`)
    quantization: dict | None


def _quantized_layers(model: nn.Module) -> dict[str, nn.QuantizedLinear]:
    return {path: layer for path, layer in model.named_modules() if isinstance(layer, nn.QuantizedLinear)}


def plan_transformer(ckpt: Checkpoint) -> TransformerPlans:
    """Build and plan both modules as `load_transformer` and `load_text_processor` do, and check each plan."""
    section = transformer_section(ckpt)
    model = build_from_config(ckpt, "transformer", lambda: LTXModel(TransformerConfig.from_section(section)))
    component = ckpt.component("transformer")
    quantization = None
    if component.quantized_paths:  # pre-quantized layers: swapped in before planning, as load_transformer does
        quantization = ckpt.quantization or {"bits": 4, "group_size": 64}
        quantize_like(model, component, sanitize_transformer_key, quantization["bits"], quantization["group_size"])
    plan = plan_module(model, component, sanitize_transformer_key)
    check_plan(model, plan)

    processor = TextEmbeddingsProcessor(text_processor_config(ckpt))
    text = _text_component(ckpt)
    processor_plan = plan_module(processor, text, sanitize_processor_key)
    check_plan(processor, processor_plan)
    return TransformerPlans(ckpt, model, plan, processor, processor_plan, text, quantization)


def _logical_params(plan: LoadPlan, quantization: dict | None) -> int:
    """Parameters of the float model: packed uint32 weights unpacked, quantization scales and biases left out."""
    quantized = {e.param.key.removesuffix(".weight") for e in plan.entries if e.source.dtype == "U32"}
    total = 0
    for entry in plan.entries:
        owner, _, leaf = entry.param.key.rpartition(".")
        size = math.prod(entry.param.shape)
        if owner in quantized and leaf in ("scales", "biases"):
            continue
        total += size * 32 // quantization["bits"] if entry.source.dtype == "U32" else size
    return total


@pytest.mark.parametrize("name", LTX_MANIFESTS)
def test_manifest_transformer_and_text_processor_plan_exactly(name: str) -> None:
    manifest = load_manifest(name)
    ckpt = manifest_checkpoint(manifest)
    plans = plan_transformer(ckpt)
    version, layout = manifest["version"], manifest["layout"]
    config, text_config = plans.model.config, plans.processor.config

    # The fixture's block counts are the listing's own: they must match the stacks the configs build.
    for stack, count in manifest["repeated_blocks"].items():
        if stack.endswith("transformer_1d_blocks"):
            assert count == (text_config.audio if "audio_embeddings" in stack else text_config.video).layers, stack
        else:
            assert count == config.num_layers == 48, stack

    # Every stored transformer/connector/projection key is read by exactly one of the two plans.
    components = [ckpt.component(c) for c in TEXT_COMPONENTS if ckpt.has(c)]
    stored = set().union(*(stored_keys(c) for c in components))
    assert len(stored) == sum(len(c.tensors) for c in components)
    transformer = ckpt.component("transformer")
    used, used_by_processor = used_keys(plans.plan), used_keys(plans.processor_plan)
    assert not used & used_by_processor
    copies = [key for key in transformer.tensors if key.startswith(CONNECTORS)]
    if layout == "official":
        # The connectors live inside model.diffusion_model.*: foreign to the transformer, read by the processor.
        assert plans.text.tensors.keys() == transformer.tensors.keys() | {
            f"text_embedding_projection.{k}" for k in ckpt.component("text_embedding_projection").tensors
        }
        assert stored_keys(transformer, plans.plan.foreign_keys) == stored_keys(transformer, copies)
        assert stored_keys(transformer, copies) <= used_by_processor
        assert stored_keys(plans.text, plans.processor_plan.foreign_keys) == used
        assert used | used_by_processor == stored
    elif layout == "unified":
        # mlx_video keeps a copy of the connectors under transformer.* (MLX names): foreign to both plans, since
        # the processor reads connector.* (PyTorch names). The copies hold the same tensors.
        assert len(copies) == len(ckpt.component("connector").tensors) == 58
        assert sorted(plans.plan.foreign_keys) == sorted(copies)
        assert plans.processor_plan.foreign_keys == []
        assert used | used_by_processor | stored_keys(transformer, copies) == stored
        assert {sanitize_processor_key(k): transformer.tensors[k].shape for k in copies} == {
            sanitize_processor_key(k): info.shape for k, info in ckpt.component("connector").tensors.items()
        }
    else:
        # The split connector file also holds text_embedding_projection.*; nothing is left over anywhere.
        assert copies == [] and not ckpt.has("text_embedding_projection")
        assert plans.plan.foreign_keys == plans.processor_plan.foreign_keys == []
        assert used | used_by_processor == stored
    listed = [key for key in manifest["tensors"] if key.startswith(("model.", "transformer", "connector", "text_"))]
    assert len(listed) == len(stored)

    # The variant is detected from the config, never from the name.
    block = plans.model.transformer_blocks[0]
    if version == "2.0":
        assert not config.apply_gated_attention and not config.cross_attention_adaln
        assert config.caption_channels == 3840
        assert "caption_projection" in plans.model and "audio_caption_projection" in plans.model
        assert "prompt_adaln_single" not in plans.model and "prompt_scale_shift_table" not in block
        assert "to_gate_logits" not in block.attn1
        assert not text_config.v2 and "aggregate_embed" in plans.processor.feature_extractor
        assert (text_config.video.heads, text_config.video.head_dim, text_config.video.layers) == (30, 128, 2)
        assert text_config.audio == text_config.video and not text_config.video.gated
    else:
        assert config.apply_gated_attention and config.cross_attention_adaln
        assert config.caption_channels is None
        assert "caption_projection" not in plans.model and "audio_caption_projection" not in plans.model
        assert "prompt_adaln_single" in plans.model and "audio_prompt_scale_shift_table" in block
        assert "to_gate_logits" in block.attn1 and "to_gate_logits" in block.video_to_audio_attn
        assert text_config.v2 and "video_aggregate_embed" in plans.processor.feature_extractor
        assert "aggregate_embed" not in plans.processor.feature_extractor
        assert (text_config.video.heads, text_config.video.head_dim, text_config.video.layers) == (32, 128, 8)
        assert (text_config.audio.heads, text_config.audio.head_dim, text_config.audio.layers) == (32, 64, 8)
        assert text_config.video.gated and text_config.audio.gated
    assert block.scale_shift_table.shape == (9 if version == "2.3" else 6, 4096)
    assert (text_config.gemma_hidden, text_config.gemma_layers) == (3840, 49)

    counts = {"transformer": param_count(plans.plan), "embeddings_processor": param_count(plans.processor_plan)}
    print(f"\n{name}: {counts}")
    assert counts["embeddings_processor"] == PROCESSOR_PARAMS[version]
    assert _logical_params(plans.plan, plans.quantization) == TRANSFORMER_PARAMS[version]
    summary = manifest["summary"]
    if layout == "official":
        assert plans.quantization is None and counts["transformer"] == TRANSFORMER_PARAMS[version]
        for component, plan in (("transformer", plans.plan), ("embeddings_processor", plans.processor_plan)):
            assert summary[component] == {"keys": len(plan.entries), "params": counts[component]}
    elif layout == "unified":
        assert plans.quantization is None and counts["transformer"] == TRANSFORMER_PARAMS[version]
        per_prefix = summary["keys_per_prefix"]
        assert per_prefix["transformer"] == len(plans.plan.entries) + len(copies)
        assert per_prefix["connector"] + per_prefix["text_embedding_projection"] == len(plans.processor_plan.entries)
    else:
        # 4-bit, group 64 (split_model.json), for the 28 attention/feed-forward Linear layers of every block.
        assert plans.quantization == {"bits": 4, "group_size": 64}
        layers = _quantized_layers(plans.model)
        assert len(layers) == Q4_LAYERS_PER_BLOCK * config.num_layers
        assert {(layer.bits, layer.group_size) for layer in layers.values()} == {(4, 64)}
        assert all(path.startswith("transformer_blocks.") and "to_gate_logits" not in path for path in layers)
        assert counts["transformer"] == Q4_TRANSFORMER_ELEMENTS  # stored elements, as the summary counts them
        for file, plan in (("transformer", plans.plan), ("connector", plans.processor_plan)):
            entry = summary[f"{file}.safetensors"]
            assert (entry["tensors"], entry["params_or_elements"]) == (len(plan.entries), param_count(plan))
    # Official files are PyTorch-named but every transformer/connector tensor is 1-D or 2-D: nothing is permuted.
    assert {e.permutation for e in plans.plan.entries + plans.processor_plan.entries} == {None}


@pytest.mark.parametrize("name", LTX_MANIFESTS)
def test_loaders_plan_what_the_test_plans(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """`load_transformer` and `load_text_processor`, with loading replaced by planning, plan what the test plans."""
    ckpt = manifest_checkpoint(load_manifest(name))
    recorded: list[LoadPlan] = []

    def plan_only(module, component, sanitize=lambda key: key, dtype=None) -> LoadPlan:
        recorded.append(plan_module(module, component, sanitize))
        return recorded[-1]

    monkeypatch.setattr(transformer_loader, "load_module", plan_only)
    model = load_transformer(ckpt)
    load_text_processor(ckpt)
    expected = plan_transformer(ckpt)
    assert len(recorded) == 2
    for got, want in zip(recorded, (expected.plan, expected.processor_plan), strict=True):
        assert {(e.param, e.source, e.permutation) for e in got.entries} == {
            (e.param, e.source, e.permutation) for e in want.entries
        }
        assert sorted(got.foreign_keys) == sorted(want.foreign_keys)
    expected.model.fuse_projections()  # as load_transformer does once the weights are in
    assert _quantized_layers(model).keys() == _quantized_layers(expected.model).keys()


def test_split_config_spelling_is_understood() -> None:
    """mlx-video-with-audio's 2.3 spelling (both caption-projection linears off) means ltx-core's V2 design."""
    manifest = load_manifest(SPLIT)
    section = manifest["config"]["transformer"]
    assert "caption_proj_before_connector" not in section
    assert section["caption_projection_first_linear"] is False and section["caption_projection_second_linear"] is False
    ckpt = manifest_checkpoint(manifest)
    assert TransformerConfig.from_section(transformer_section(ckpt)).caption_channels is None
    assert text_processor_config(ckpt) == TextProcessorConfig.from_section(
        load_manifest("ltx-2.3-22b-official")["config"]["transformer"]
    )


# --- The q4 split repo as mlx-forge may have written it ("known_or_possible_differences_in_dgrauet_repo") ---


def _quantized_gates(files: dict) -> dict:
    """mlx-forge quantizes every 2-D ``.weight`` under transformer_blocks: to_gate_logits too (4 bits, group 64)."""
    transformer = {}
    for key, (shape, dtype) in files["transformer"].items():
        if key.startswith("transformer_blocks.") and key.endswith(".to_gate_logits.weight"):
            out, width = shape
            base = key.removesuffix(".weight")
            transformer[key] = [[out, width // 8], "uint32"]  # 8 4-bit values per uint32 word
            transformer[f"{base}.scales"] = [[out, width // 64], "bfloat16"]
            transformer[f"{base}.biases"] = [[out, width // 64], "bfloat16"]
        else:
            transformer[key] = [shape, dtype]
    return {**files, "transformer": transformer}


def _with_component_prefix(files: dict) -> dict:
    """Every key inside a file carries its component prefix: ``transformer.transformer_blocks.0...`` (all files)."""
    return {file: {f"{file}.{key}": value for key, value in keys.items()} for file, keys in files.items()}


VARIANTS = {
    "quantized_gates": [_quantized_gates],
    "component_prefix": [_with_component_prefix],
    "all": [_quantized_gates, _with_component_prefix],
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_split_repo_transformer_variants(variant: str) -> None:
    manifest = load_manifest(SPLIT)
    differences = manifest["known_or_possible_differences_in_dgrauet_repo"]
    assert set(differences) >= {"quantization_predicate", "key_prefixes", "transformer_filename"}
    files = split_files(manifest["tensors"])
    for transform in VARIANTS[variant]:
        files = transform(files)
    if _with_component_prefix in VARIANTS[variant]:
        assert "transformer.safetensors:transformer.transformer_blocks.0.attn1.to_q.scales" in join_files(files)
        assert "connector.safetensors:connector.text_embedding_projection.video_aggregate_embed.bias" in join_files(
            files
        )
    ckpt = manifest_checkpoint(manifest, join_files(files))
    plans = plan_transformer(ckpt)
    assert plans.plan.foreign_keys == plans.processor_plan.foreign_keys == []
    assert used_keys(plans.plan) == stored_keys(ckpt.component("transformer"))
    assert used_keys(plans.processor_plan) == stored_keys(ckpt.component("connector"))

    gates = _quantized_gates in VARIANTS[variant]
    layers = _quantized_layers(plans.model)
    per_block = Q4_LAYERS_PER_BLOCK + (GATES_PER_BLOCK if gates else 0)
    assert len(layers) == per_block * 48
    assert sum(path.endswith("to_gate_logits") for path in layers) == (GATES_PER_BLOCK * 48 if gates else 0)
    assert _quantized_layers(plans.processor) == {}  # the connectors and the text projection stay float

    stored = sum(math.prod(info.shape) for info in ckpt.component("transformer").tensors.values())
    assert param_count(plans.plan) == stored
    # bf16 (32, 4096) and (32, 2048) gates -> uint32 (32, w/8) + 2 x (32, w/64): 497,664 fewer elements per block.
    assert stored == Q4_TRANSFORMER_ELEMENTS - (48 * 497_664 if gates else 0)
    assert _logical_params(plans.plan, plans.quantization) == TRANSFORMER_PARAMS["2.3"]
    assert param_count(plans.processor_plan) == PROCESSOR_PARAMS["2.3"]
