"""The Diffusers layout of LTX-2.x (``Lightricks/LTX-2.5-Diffusers``): key names of diffusers 0.42.1's classes mapped
onto the official (ltx-core) names our loaders read.

A Diffusers repo keeps one folder per component (``transformer/``, ``connectors/``, ``duration_head/``,
``text_encoder/`` ...), each with a ``config.json`` and ``*.safetensors``. The text encoder folder is a transformers
folder (``weights/gemma4.py`` reads it). The renames below were derived from diffusers 0.42.1's
``LTX2VideoTransformer3DModel``, ``LTX2TextConnectors`` and ``LTX2DurationHead`` and are checked key for key and
shape for shape against the official LTX-2.5 listing (tests/test_diffusers_ltx2_layout.py). Only the duration head
needs more than a rename: diffusers splits its pooler's fused ``in_proj`` into ``to_q``/``to_k``/``to_v``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import mlx.core as mx

from ltx_backend.errors import ErrorCode, LtxError
from ltx_backend.weights.checkpoint import Component
from ltx_backend.weights.safetensors_file import SafetensorsFile

# Top-level modules of LTX2VideoTransformer3DModel -> ltx-core's LTXModel (longest names first).
TRANSFORMER_MODULES = {
    "audio_proj_in": "audio_patchify_proj",
    "proj_in": "patchify_proj",
    "audio_time_embed": "audio_adaln_single",
    "time_embed": "adaln_single",
    "audio_prompt_adaln": "audio_prompt_adaln_single",
    "prompt_adaln": "prompt_adaln_single",
    "av_cross_attn_video_scale_shift": "av_ca_video_scale_shift_adaln_single",
    "av_cross_attn_audio_scale_shift": "av_ca_audio_scale_shift_adaln_single",
    "av_cross_attn_video_a2v_gate": "av_ca_a2v_gate_adaln_single",
    "av_cross_attn_audio_v2a_gate": "av_ca_v2a_gate_adaln_single",
}
BLOCK_TABLES = {
    "video_a2v_cross_attn_scale_shift_table": "scale_shift_table_a2v_ca_video",
    "audio_a2v_cross_attn_scale_shift_table": "scale_shift_table_a2v_ca_audio",
}
CONNECTOR_MODULES = {
    "video_text_proj_in": "text_embedding_projection.video_aggregate_embed",
    "audio_text_proj_in": "text_embedding_projection.audio_aggregate_embed",
    "video_connector": "video_embeddings_connector",
    "audio_connector": "audio_embeddings_connector",
}
POOLER_SPLIT = ("to_q", "to_k", "to_v")  # row blocks of nn.MultiheadAttention's in_proj, in this order
_NORMS = re.compile(r"\.norm_([qk])\.")


def _rename_first(key: str, table: dict[str, str]) -> str:
    head, dot, rest = key.partition(".")
    return table[head] + dot + rest if head in table else key


def transformer_key(key: str) -> str:
    """diffusers ``LTX2VideoTransformer3DModel`` key -> official key (without ``model.diffusion_model.``)."""
    key = _rename_first(key, TRANSFORMER_MODULES)
    match = re.match(r"^(transformer_blocks\.\d+\.)([a-z0-9_]+)(.*)$", key)
    if match:
        key = match[1] + BLOCK_TABLES.get(match[2], match[2]) + match[3]
    return _NORMS.sub(r".\1_norm.", key)


def connectors_key(key: str) -> str:
    """diffusers ``LTX2TextConnectors`` key -> official key (connectors as in the transformer file, projection as
    in the text-encoder file: ``text_embedding_projection.*``)."""
    key = _rename_first(key, CONNECTOR_MODULES)
    key = re.sub(
        r"^(video|audio)_embeddings_connector\.transformer_blocks\.",
        r"\1_embeddings_connector.transformer_1d_blocks.",
        key,
    )
    return _NORMS.sub(r".\1_norm.", key)


def duration_head_key(key: str) -> str | tuple[str, int]:
    """diffusers ``LTX2DurationHead`` key -> official key (with ``duration_head.``), or (fused key, row block)."""
    match = re.match(r"^attention_pooler\.(to_[qkv]|to_out)\.(weight|bias)$", key)
    if not match:
        return "duration_head." + key
    if match[1] == "to_out":
        return f"duration_head.attention_pooler.cross_attn.out_proj.{match[2]}"
    fused = "in_proj_weight" if match[2] == "weight" else "in_proj_bias"
    return f"duration_head.attention_pooler.cross_attn.{fused}", POOLER_SPLIT.index(match[1])


def fuse_duration_head(tensors: dict[str, mx.array]) -> dict[str, mx.array]:
    """A diffusers duration-head state -> the official one (keys with ``duration_head.``, q/k/v fused)."""
    out: dict[str, mx.array] = {}
    parts: dict[str, dict[int, mx.array]] = {}
    for key, value in tensors.items():
        target = duration_head_key(key)
        if isinstance(target, tuple):
            parts.setdefault(target[0], {})[target[1]] = value
        else:
            out[target] = value
    for key, blocks in parts.items():
        if sorted(blocks) != [0, 1, 2]:
            raise LtxError(
                ErrorCode.WEIGHTS_MISSING_KEY,
                f"duration head: the pooler's {key.rsplit('.', 1)[-1]} has only {len(blocks)} of to_q/to_k/to_v",
                "The duration_head folder is incomplete; re-download it.",
            )
        out[key] = mx.concatenate([blocks[i] for i in range(3)], axis=0)
    return out


def is_diffusers_repo(root: str | Path) -> bool:
    return (Path(root) / "model_index.json").is_file()


def diffusers_component(root: str | Path, folder: str, rename) -> tuple[Component, dict]:
    """One component folder of a Diffusers repo, keys renamed to official names, and its config.json."""
    directory = Path(root) / folder
    files = [SafetensorsFile(path) for path in sorted(directory.glob("*.safetensors"))]
    if not files:
        raise LtxError(
            ErrorCode.WEIGHTS_MISSING_KEY,
            f"{directory} holds no .safetensors weights",
            "The Diffusers repo is incomplete; download it again.",
            component=folder,
        )
    config_path = directory / "config.json"
    config = json.loads(config_path.read_text()) if config_path.is_file() else {}
    tensors = {}
    for file in files:
        for key, info in file.tensors.items():
            tensors[rename(key)] = info
    return Component(folder, tensors, {file.path: file for file in files}, "torch"), config
