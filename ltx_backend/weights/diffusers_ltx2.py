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
from ltx_backend.weights.checkpoint import Checkpoint, Component, Layout
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


# Defaults of diffusers 0.42.1's LTX2VideoTransformer3DModel / LTX2TextConnectors (a config.json may omit them).
TRANSFORMER_DEFAULTS = {
    "in_channels": 128, "out_channels": 128, "num_attention_heads": 32, "attention_head_dim": 128,
    "cross_attention_dim": 4096, "pos_embed_max_pos": 20, "base_height": 2048, "base_width": 2048, "gated_attn": False,
    "cross_attn_mod": False, "audio_in_channels": 128, "audio_out_channels": 128, "audio_num_attention_heads": 32,
    "audio_attention_head_dim": 64, "audio_cross_attention_dim": 2048, "audio_pos_embed_max_pos": 20,
    "num_layers": 48, "norm_eps": 1e-6, "caption_channels": 3840, "rope_theta": 10000.0, "rope_double_precision": True,
    "timestep_scale_multiplier": 1000, "cross_attn_timestep_scale_multiplier": 1000, "rope_type": "interleaved",
    "use_prompt_embeddings": True, "ff_bias": True, "audio_ff_bias": True, "use_prompt_adaln_single": True,
    "use_keyframes_abs_pos_embedding": False,
}  # fmt: skip
CONNECTOR_DEFAULTS = {
    "video_connector_num_attention_heads": 30, "video_connector_attention_head_dim": 128,
    "video_connector_num_layers": 2, "video_gated_attn": False, "audio_connector_num_attention_heads": 30,
    "audio_connector_attention_head_dim": 128, "audio_connector_num_layers": 2, "connector_rope_base_seq_len": 4096,
    "per_modality_projections": False,
}  # fmt: skip
SAME_NAMES = (
    "in_channels", "out_channels", "num_attention_heads", "attention_head_dim", "cross_attention_dim",
    "audio_in_channels", "audio_out_channels", "audio_num_attention_heads", "audio_attention_head_dim",
    "audio_cross_attention_dim", "num_layers", "norm_eps", "caption_channels", "timestep_scale_multiplier",
    "rope_type", "ff_bias", "audio_ff_bias", "use_prompt_adaln_single", "use_keyframes_abs_pos_embedding",
)  # fmt: skip


def transformer_section(transformer: dict, connectors: dict) -> dict:
    """The ltx-core ``transformer`` config section that a Diffusers repo's transformer/ and connectors/ configs
    describe (the section our transformer and text-processor builders read)."""
    t = {**TRANSFORMER_DEFAULTS, **transformer}
    c = {**CONNECTOR_DEFAULTS, **connectors}
    if c["video_gated_attn"] != c.get("audio_gated_attn", c["video_gated_attn"]):
        raise ValueError("the video and audio connectors differ in gated attention; ltx-core has one setting")
    section = {key: t[key] for key in SAME_NAMES}
    section.update(
        positional_embedding_max_pos=[t["pos_embed_max_pos"], t["base_height"], t["base_width"]],
        audio_positional_embedding_max_pos=[t["audio_pos_embed_max_pos"]],
        positional_embedding_theta=t["rope_theta"],
        frequencies_precision="float64" if t["rope_double_precision"] else "float32",
        av_ca_timestep_scale_multiplier=t["cross_attn_timestep_scale_multiplier"],
        apply_gated_attention=t["gated_attn"],
        cross_attention_adaln=t["cross_attn_mod"],
        use_middle_indices_grid=True,  # diffusers' LTX-2 RoPE takes the midpoint of each cell's bounds
        connector_num_attention_heads=c["video_connector_num_attention_heads"],
        connector_attention_head_dim=c["video_connector_attention_head_dim"],
        connector_num_layers=c["video_connector_num_layers"],
        audio_connector_num_attention_heads=c["audio_connector_num_attention_heads"],
        audio_connector_attention_head_dim=c["audio_connector_attention_head_dim"],
        audio_connector_num_layers=c["audio_connector_num_layers"],
        connector_apply_gated_attention=c["video_gated_attn"],
        connector_positional_embedding_max_pos=[c["connector_rope_base_seq_len"]],
    )
    if c["per_modality_projections"] == t["use_prompt_embeddings"]:
        raise ValueError(
            "per_modality_projections (connectors) and use_prompt_embeddings (transformer) must differ: the text is "
            "projected either before the connectors (LTX-2.3+) or inside the transformer (LTX-2.0)"
        )
    if c["per_modality_projections"]:  # LTX-2.3 and later: projection before the connectors, one per modality
        section.update(
            caption_proj_before_connector=True, caption_projection_first_linear=False, caption_proj_input_norm=False,
            caption_projection_second_linear=False,
        )  # fmt: skip
    return section


def _read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LtxError(
            ErrorCode.CONFIG_INVALID, f"{path} is not readable JSON: {exc}", "Re-download the Diffusers repo."
        ) from exc
    if not isinstance(value, dict):
        raise LtxError(ErrorCode.CONFIG_INVALID, f"{path} is not a JSON object", "Re-download the Diffusers repo.")
    return value


def open_diffusers_ltx2(root: str | Path) -> Checkpoint:
    """A Diffusers LTX-2.x repo as a checkpoint: components ``transformer`` and ``connector`` keyed by official
    names (so the official loaders read them), the ``transformer`` config section translated from the two folders'
    config.json files.

    ``model_version``: the Diffusers files' own metadata was not seen; a transformer built with the keyframe marker
    (``use_keyframes_abs_pos_embedding``, only LTX-2.5 has it) is taken as 2.5.0, anything else as unknown."""
    root = Path(root).expanduser()
    for folder in ("transformer", "connectors"):
        if not (root / folder / "config.json").is_file():
            raise LtxError(
                ErrorCode.LAYOUT_UNKNOWN,
                f"{root} has no {folder}/config.json",
                "Expected a Diffusers LTX-2 repo (model_index.json, transformer/, connectors/, ...).",
            )
    transformer_config = _read_json(root / "transformer" / "config.json")
    connectors_config = _read_json(root / "connectors" / "config.json")
    try:
        section = transformer_section(transformer_config, connectors_config)
    except (ValueError, TypeError, KeyError) as exc:
        raise LtxError(
            ErrorCode.CONFIG_INVALID, f"{root}: the transformer/connectors configs are not usable: {exc}",
            "Re-download the Diffusers repo.",
        ) from exc  # fmt: skip
    transformer, _ = diffusers_component(root, "transformer", transformer_key)
    connector, _ = diffusers_component(root, "connectors", connectors_key)
    files = [*transformer.files.values(), *connector.files.values()]
    info = {"model_version": "2.5.0"} if section.get("use_keyframes_abs_pos_embedding") else {}
    ckpt = Checkpoint(root=root, layout=Layout.DIFFUSERS, files=files, config={"transformer": section}, model_info=info)
    ckpt._components = {"transformer": transformer, "connector": Component("connector", connector.tensors,
                                                                           connector.files, "torch")}  # fmt: skip
    return ckpt
