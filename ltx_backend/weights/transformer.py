"""Build the transformer and the text embeddings processor from a checkpoint and load their weights."""

from __future__ import annotations

from collections.abc import Sequence

import mlx.core as mx
import mlx.nn as nn

from ltx_backend.errors import ErrorCode, LtxError
from ltx_backend.models.text_connector import (
    GEMMA_12B_HIDDEN,
    GEMMA_12B_LAYERS,
    TextEmbeddingsProcessor,
    TextProcessorConfig,
    sanitize_processor_key,
)
from ltx_backend.models.transformer import LTXModel, TransformerConfig, sanitize_transformer_key
from ltx_backend.weights import parallel_load
from ltx_backend.weights.checkpoint import Checkpoint, Component
from ltx_backend.weights.load import build_from_config, load_module
from ltx_backend.weights.lora import LoraSpec, apply_loras
from ltx_backend.weights.mixed_quant import LayerQuantization, detect_layer_quantization, quantize_by_shapes

# The transformer section of the official LTX-2.0 header: for MLX conversions that ship only a flat config.json.
LTX2_TRANSFORMER_SECTION = {
    "num_attention_heads": 32, "attention_head_dim": 128, "in_channels": 128, "out_channels": 128, "num_layers": 48,
    "cross_attention_dim": 4096, "caption_channels": 3840, "norm_eps": 1e-06, "audio_num_attention_heads": 32,
    "audio_attention_head_dim": 64, "audio_in_channels": 128, "audio_out_channels": 128,
    "audio_cross_attention_dim": 2048, "positional_embedding_theta": 10000.0,
    "positional_embedding_max_pos": [20, 2048, 2048], "audio_positional_embedding_max_pos": [20],
    "timestep_scale_multiplier": 1000, "av_ca_timestep_scale_multiplier": 1000.0, "rope_type": "split",
    "frequencies_precision": "float64", "use_middle_indices_grid": True, "connector_num_attention_heads": 30,
    "connector_attention_head_dim": 128, "connector_num_layers": 2, "connector_num_learnable_registers": 128,
}  # fmt: skip
# Layers that mlx-video-with-audio's converter (and our load-time quantization) stores quantized.
QUANTIZED_SUFFIXES = (".to_q", ".to_k", ".to_v", ".to_out", "ff.proj_in", "ff.proj_out")  # ff and audio_ff
QUANTIZATION_BITS = (4, 8)


def transformer_section(ckpt: Checkpoint) -> dict:
    """The checkpoint's transformer config; for conversions without one, the LTX-2.0 header plus config.json."""
    section = ckpt.section("transformer")
    if not section:
        flat = {key: value for key, value in ckpt.model_info.items() if key in LTX2_TRANSFORMER_SECTION}
        return {**LTX2_TRANSFORMER_SECTION, **flat}
    # mlx-video-with-audio's LTX-2.3 conversions say "no caption projection in the transformer" only as
    # caption_projection_{first,second}_linear = false; ltx-core's spelling of that design is these two keys.
    linears = (section.get("caption_projection_first_linear"), section.get("caption_projection_second_linear"))
    if "caption_proj_before_connector" not in section and linears == (False, False):
        section = {**section, "caption_proj_before_connector": True}
        section.setdefault("caption_proj_input_norm", False)
    return section


GROUP_SIZE = 64


def quantizable_layer(path: str, module: nn.Module) -> bool:
    """The attention projections and feed-forwards of the blocks (where the compute is), as converters choose."""
    if not (isinstance(module, nn.Linear) and path.startswith("transformer_blocks.")):
        return False
    return path.endswith(QUANTIZED_SUFFIXES) and module.weight.shape[1] % GROUP_SIZE == 0


def prepare_transformer(ckpt: Checkpoint) -> tuple[LTXModel, Component]:
    """The denoiser built from the config (no weights yet), stored-quantized layers swapped, and its tensors."""
    section = transformer_section(ckpt)
    model = build_from_config(ckpt, "transformer", lambda: LTXModel(TransformerConfig.from_section(section)))
    component = ckpt.component("transformer")
    quantize_by_shapes(model, component, sanitize_transformer_key)  # each layer as stored: uniform or mixed bits
    return model, component


def load_transformer(
    ckpt: Checkpoint, dtype: mx.Dtype | None = None, quantize: int | None = None, loras: Sequence[LoraSpec] = ()
) -> LTXModel:
    """The denoiser, loaded exactly; pre-quantized layers as stored, or quantized now with ``quantize`` bits.

    `loras` are fused into the weights before quantizing now (into the dequantized weights of pre-quantized
    layers) and before the q/k/v projections are stacked."""
    if quantize is not None and quantize not in QUANTIZATION_BITS:
        raise LtxError(ErrorCode.INVALID_PARAMS, f"quantize must be 4 or 8, not {quantize}", "Use 4 or 8 (or none).")
    model, component = prepare_transformer(ckpt)
    load_module(model, component, sanitize_transformer_key, dtype)
    apply_loras(model, loras)
    if quantize is not None and not component.quantized_paths:
        nn.quantize(model, group_size=GROUP_SIZE, bits=quantize, class_predicate=quantizable_layer)
    model.fuse_projections(parallel_load.stack)  # on the lanes the q/k/v were read on, when read in parallel
    return model


def transformer_quantization(ckpt: Checkpoint) -> dict[str, LayerQuantization]:
    """Every stored-quantized transformer layer's bits and group size (from the headers; nothing is read)."""
    section = transformer_section(ckpt)
    model = build_from_config(ckpt, "transformer", lambda: LTXModel(TransformerConfig.from_section(section)))
    return detect_layer_quantization(model, ckpt.component("transformer"), sanitize_transformer_key)


def text_processor_config(
    ckpt: Checkpoint, gemma_hidden: int = GEMMA_12B_HIDDEN, gemma_layers: int = GEMMA_12B_LAYERS
) -> TextProcessorConfig:
    section = transformer_section(ckpt)
    return build_from_config(
        ckpt, "transformer", lambda: TextProcessorConfig.from_section(section, gemma_hidden, gemma_layers)
    )


def _text_component(ckpt: Checkpoint) -> Component:
    """Connectors and text projection gathered from wherever the layout keeps them, keyed as in official files."""
    parts = []
    if ckpt.has("connector"):  # MLX conversions (its text_embedding_projection.* keys come along in split files)
        parts.append((ckpt.component("connector"), ""))
    elif ckpt.has("transformer"):  # official files keep the connectors inside the transformer
        parts.append((ckpt.component("transformer"), ""))
    if ckpt.has("text_embedding_projection"):
        parts.append((ckpt.component("text_embedding_projection"), "text_embedding_projection."))
    if not parts:
        raise LtxError(
            ErrorCode.WEIGHTS_MISSING_KEY,
            f"{ckpt.root} has no text connector weights",
            "The checkpoint is incomplete; re-download it.",
        )
    tensors, files = {}, {}
    for component, prefix in parts:
        tensors.update({prefix + key: info for key, info in component.tensors.items()})
        files.update(component.files)
    return Component("connector", tensors, files, parts[0][0].convention)


def load_text_processor(
    ckpt: Checkpoint,
    dtype: mx.Dtype | None = None,
    gemma_hidden: int = GEMMA_12B_HIDDEN,
    gemma_layers: int = GEMMA_12B_LAYERS,
) -> TextEmbeddingsProcessor:
    """Feature extractor + video/audio connectors for a text encoder with that many layers of that width."""
    processor, component = prepare_text_processor(ckpt, gemma_hidden, gemma_layers)
    load_module(processor, component, sanitize_processor_key, dtype)
    return processor


def prepare_text_processor(
    ckpt: Checkpoint, gemma_hidden: int = GEMMA_12B_HIDDEN, gemma_layers: int = GEMMA_12B_LAYERS
) -> tuple[TextEmbeddingsProcessor, Component]:
    """The connectors built from the config (no weights yet) and their tensors."""
    config = text_processor_config(ckpt, gemma_hidden, gemma_layers)
    processor = build_from_config(ckpt, "transformer", lambda: TextEmbeddingsProcessor(config))
    return processor, _text_component(ckpt)
