"""The Diffusers layout of LTX-2.5 mapped onto the official keys, key for key and shape for shape.

`tests/fixtures/manifests/ltx-2.5-diffusers.json` lists the state dicts of diffusers 0.42.1's own classes built at
the real 2.5 size (`tests/reference/make_diffusers_ltx25_keys.py`); `ltx-2.5-official-derived.json` lists the
official split files (`tests/reference/extract_ltx25_manifest.py`). Every diffusers key must map to a distinct
official key of the same shape, and every official key of the transformer proper, the connectors, the text
projection and the duration head must be reached. The duration head's split q/k/v are also fused numerically and
must reproduce ltx-core's outputs (fixture d).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from ltx_backend.weights.diffusers_ltx2 import connectors_key, duration_head_key, transformer_key
from ltx_backend.weights.ltx25 import load_duration_head, load_duration_head_diffusers

MANIFESTS = Path(__file__).parent / "fixtures" / "manifests"
LTX25 = Path(__file__).parent / "fixtures" / "ltx25"
TRANSFORMER_FILE = "diffusion_models/ltx-2.5-22b-distilled-transformer-bf16.safetensors:"
TE_FILE = "text_encoders/gemma4-12b-with-proj-ltx-2.5-bf16.safetensors:"
HEAD_FILE = "model_patches/ltx-2.5-duration-head-bf16.safetensors:"
PREFIX = "model.diffusion_model."
BLOCK = re.compile(r"^(?P<stack>.*?(?:transformer_blocks|transformer_1d_blocks))\.(?P<index>\d+)\.(?P<suffix>.+)$")


def expand(listing: dict, counts: dict) -> dict:
    out = {}
    for key, value in listing.items():
        block = BLOCK.match(key)
        if not block:
            out[key] = value
        elif block["index"] == "0":
            for i in range(counts[block["stack"]]):
                out[f"{block['stack']}.{i}.{block['suffix']}"] = value
    return out


@pytest.fixture(scope="module")
def diffusers() -> dict:
    raw = json.loads((MANIFESTS / "ltx-2.5-diffusers.json").read_text())
    return {name: expand(keys, raw["repeated_blocks"][name]) for name, keys in raw["tensors"].items()}


@pytest.fixture(scope="module")
def official() -> dict:
    raw = json.loads((MANIFESTS / "ltx-2.5-official-derived.json").read_text())
    counts = {key.partition(":")[2]: n for key, n in raw["repeated_blocks"].items()}
    files: dict[str, dict] = {}
    for key, (shape, _) in raw["tensors"].items():
        file, _, name = key.partition(":")
        files.setdefault(file + ":", {})[name] = shape
    return {file: expand(keys, counts) for file, keys in files.items()}


def check_one_to_one(mapped: dict[str, tuple], target: dict[str, list]) -> None:
    assert len(set(mapped.values())) == len(mapped), "two diffusers keys map to one official key"
    missing = sorted(set(target) - {key for key, _ in mapped.values()})
    unknown = sorted(key for key, _ in mapped.values() if key not in target)
    assert not unknown, unknown[:10]
    assert not missing, missing[:10]
    for source, (key, shape) in mapped.items():
        assert list(shape) == target[key], (source, key, shape, target[key])


def test_transformer_keys_map_one_to_one(diffusers: dict, official: dict) -> None:
    target = {
        key[len(PREFIX) :]: shape
        for key, shape in official[TRANSFORMER_FILE].items()
        if "_embeddings_connector." not in key
    }
    mapped = {key: (transformer_key(key), tuple(shape)) for key, shape in diffusers["transformer"].items()}
    assert len(mapped) == len(target) == 4091
    check_one_to_one(mapped, target)


def test_connector_and_projection_keys_map_one_to_one(diffusers: dict, official: dict) -> None:
    target = {key[len(PREFIX) :]: s for key, s in official[TRANSFORMER_FILE].items() if "_embeddings_connector." in key}
    target.update({key: s for key, s in official[TE_FILE].items() if key.startswith("text_embedding_projection.")})
    mapped = {key: (connectors_key(key), tuple(shape)) for key, shape in diffusers["connectors"].items()}
    assert len(mapped) == len(target) == 258 + 4
    check_one_to_one(mapped, target)


def test_duration_head_keys_fuse_onto_the_official_file(diffusers: dict, official: dict) -> None:
    target = official[HEAD_FILE]
    fused: dict[str, list] = {}
    for key, shape in diffusers["duration_head"].items():
        mapped = duration_head_key(key)
        if isinstance(mapped, tuple):
            name, _ = mapped
            rows = fused.setdefault(name, [0, *shape[1:]])
            rows[0] += shape[0]
        else:
            assert mapped in target and list(shape) == target[mapped], key
            fused[mapped] = list(shape)
    assert fused == target


def test_diffusers_duration_head_reproduces_ltx_core(tmp_path: Path) -> None:
    """Fixture d's head rewritten as diffusers stores it (split q/k/v, diffusers names, its config.json)."""
    stored = load_file(LTX25 / "duration_head.safetensors")
    dim = stored["duration_head.attention_pooler.cross_attn.out_proj.weight"].shape[0]
    split = {}
    for key, value in stored.items():
        key = key.removeprefix("duration_head.")
        if key.startswith("attention_pooler.cross_attn.in_proj_"):
            leaf = "weight" if key.endswith("weight") else "bias"
            for i, name in enumerate(("to_q", "to_k", "to_v")):
                split[f"attention_pooler.{name}.{leaf}"] = value[i * dim : (i + 1) * dim]
        else:
            split[key.replace("attention_pooler.cross_attn.out_proj.", "attention_pooler.to_out.")] = value
    folder = tmp_path / "duration_head"
    folder.mkdir()
    save_file(split, folder / "diffusion_pytorch_model.safetensors")
    config = {"video_cross_attention_dim": 64, "audio_cross_attention_dim": 32, "pooler_hidden_dim": dim,
              "num_queries": 1, "num_pooler_heads": 4, "mlp_hidden_dim": 16}  # fmt: skip
    (folder / "config.json").write_text(json.dumps(config))
    refs = dict(np.load(LTX25 / "refs.npz"))
    video, audio = mx.array(refs["c.video_encoding"][None]), mx.array(refs["c.audio_encoding"][None])
    ours = load_duration_head_diffusers(folder)(video, audio).item()
    assert ours == load_duration_head(LTX25 / "duration_head.safetensors")(video, audio).item()
    assert abs(ours - float(refs["d.seconds_video_and_audio"][0])) <= 1e-5 * ours


def test_diffusers_configs_translate_to_the_official_section() -> None:
    """The configs the Diffusers classes were built with (defaults filled in) describe the same transformer and text
    processor as the official 2.5 metadata."""
    from ltx_backend.models.text_connector import TextProcessorConfig
    from ltx_backend.models.transformer import TransformerConfig
    from ltx_backend.weights.diffusers_ltx2 import transformer_section

    configs = json.loads((MANIFESTS / "ltx-2.5-diffusers.json").read_text())["configs"]
    official = json.loads((MANIFESTS / "ltx-2.5-official-derived.json").read_text())
    official = official["config_used"]["metadata"]["config"]["transformer"]
    ours = transformer_section(configs["transformer"], configs["connectors"])
    assert TransformerConfig.from_section(ours) == TransformerConfig.from_section(official)
    assert TextProcessorConfig.from_section(ours) == TextProcessorConfig.from_section(official)
    for key in ("ff_bias", "use_keyframes_abs_pos_embedding", "audio_ff_bias", "use_prompt_adaln_single"):
        assert ours[key] == official.get(key, True), key
    with pytest.raises(ValueError, match="per_modality_projections"):
        transformer_section({**configs["transformer"], "use_prompt_embeddings": True}, configs["connectors"])


def _to_diffusers_connector_key(key: str) -> str:
    """Official connector/projection key -> diffusers' name (the inverse of connectors_key, for building a repo)."""
    key = key.removeprefix(PREFIX)
    for official, ours in (
        ("text_embedding_projection.video_aggregate_embed", "video_text_proj_in"),
        ("text_embedding_projection.audio_aggregate_embed", "audio_text_proj_in"),
        ("video_embeddings_connector.transformer_1d_blocks", "video_connector.transformer_blocks"),
        ("audio_embeddings_connector.transformer_1d_blocks", "audio_connector.transformer_blocks"),
        ("video_embeddings_connector", "video_connector"),
        ("audio_embeddings_connector", "audio_connector"),
    ):
        if key.startswith(official):
            key = ours + key[len(official) :]
            break
    return key.replace(".q_norm.", ".norm_q.").replace(".k_norm.", ".norm_k.")


def test_a_diffusers_repo_loads_the_text_processor_like_ltx_core(tmp_path: Path) -> None:
    """The tiny 2.5 connectors and projection (fixture c) rewritten as a Diffusers repo: opened through the Diffusers
    layout and loaded by the unchanged text-processor loader, they reproduce ltx-core's connector outputs."""
    from ltx_backend.weights.diffusers_ltx2 import connectors_key, open_diffusers_ltx2
    from ltx_backend.weights.gemma4 import load_gemma4
    from ltx_backend.weights.ltx25 import is_ltx25
    from ltx_backend.weights.transformer import load_text_processor

    stored = load_file(LTX25 / "connectors.safetensors")
    stored.update({k: v for k, v in load_file(LTX25 / "te.safetensors").items() if k.startswith("text_embedding_")})
    renamed = {_to_diffusers_connector_key(key): value for key, value in stored.items()}
    assert all(PREFIX + connectors_key(k) in stored or connectors_key(k) in stored for k in renamed)  # round trip
    for folder in ("transformer", "connectors"):
        (tmp_path / folder).mkdir()
    save_file(renamed, tmp_path / "connectors" / "diffusion_pytorch_model.safetensors")
    save_file(
        {"proj_in.bias": np.zeros(64, np.float32)}, tmp_path / "transformer" / "diffusion_pytorch_model.safetensors"
    )
    (tmp_path / "model_index.json").write_text("{}")
    tiny = {  # fixture c's tiny 2.5 config in diffusers' names
        "transformer": {"num_attention_heads": 2, "attention_head_dim": 32, "in_channels": 16, "out_channels": 16,
                        "cross_attention_dim": 64, "audio_num_attention_heads": 2, "audio_attention_head_dim": 16,
                        "audio_in_channels": 16, "audio_out_channels": 16, "audio_cross_attention_dim": 32,
                        "num_layers": 2, "caption_channels": 64, "gated_attn": True, "cross_attn_mod": True,
                        "rope_type": "split", "use_prompt_embeddings": False, "ff_bias": False,
                        "use_keyframes_abs_pos_embedding": True},
        "connectors": {"caption_channels": 64, "text_proj_in_factor": 7, "video_connector_num_attention_heads": 2,
                       "video_connector_attention_head_dim": 32, "video_connector_num_layers": 2,
                       "video_gated_attn": True, "audio_connector_num_attention_heads": 2,
                       "audio_connector_attention_head_dim": 16, "audio_connector_num_layers": 2,
                       "audio_gated_attn": True, "rope_type": "split", "per_modality_projections": True,
                       "proj_bias": True},
    }  # fmt: skip
    for folder, config in tiny.items():
        (tmp_path / folder / "config.json").write_text(json.dumps(config))
    ckpt = open_diffusers_ltx2(tmp_path)
    assert is_ltx25(ckpt) and ckpt.layout.value == "diffusers"
    processor = load_text_processor(ckpt, mx.float32, gemma_hidden=64, gemma_layers=7)
    refs = dict(np.load(LTX25 / "refs.npz"))
    mask = mx.array(refs["c.attention_mask"][None].astype(np.int32))
    tower = load_gemma4(LTX25 / "te.safetensors", mx.float32)
    hidden = mx.stack(tower.hidden_states(mx.array(refs["c.input_ids"][None].astype(np.int32)), mask), axis=-1)
    video, audio, _ = processor(hidden, mask)
    assert float(np.abs(np.array(video[0]) - refs["c.video_encoding"]).max()) <= 1e-4
    assert float(np.abs(np.array(audio[0]) - refs["c.audio_encoding"]).max()) <= 1e-4
