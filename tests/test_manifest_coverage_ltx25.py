"""The LTX-2.5 loaders (Gemma 4 text encoder, text projection + connectors, duration head) against the derived key
manifest of the official split files, no weights.

`tests/fixtures/manifests/ltx-2.5-official-derived.json` (compressed by `tests/reference/extract_ltx25_manifest.py`
from the derived manifest: ltx-core 1.2.0 + transformers 5.14.1 on the meta device, medium confidence) lists the
transformer, text-encoder and duration-head files. Each module is built lazily at its real size from the manifest's
configs and its load is planned against a data-less file holding the listing: every tensor of the module's part
must feed exactly one parameter with the right shape, everything else must be foreign, and the parameter counts
must be the manifest summary's.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from manifest_checkpoint import check_plan, listed_file, param_count, split_files

from ltx_backend.models.duration_head import DurationHead, DurationHeadConfig
from ltx_backend.models.gemma4 import Gemma4Config, Gemma4TextModel, sanitize_gemma4_key
from ltx_backend.models.text_connector import sanitize_processor_key
from ltx_backend.weights.checkpoint import Checkpoint, Component, Layout
from ltx_backend.weights.gemma4 import Gemma4Source
from ltx_backend.weights.load import plan_module
from ltx_backend.weights.ltx25 import (
    build_text_processor_ltx25,
    check_text_encoder,
    is_ltx25,
    sanitize_duration_key,
    text_processor_component,
)

MANIFEST = Path(__file__).parent / "fixtures" / "manifests" / "ltx-2.5-official-derived.json"
TRANSFORMER = "diffusion_models/ltx-2.5-22b-distilled-transformer-bf16"
TEXT_ENCODER = "text_encoders/gemma4-12b-with-proj-ltx-2.5-bf16"
DURATION_HEAD = "model_patches/ltx-2.5-duration-head-bf16"
BLOCK = re.compile(r"^(?P<stack>.*?(?:transformer_blocks|transformer_1d_blocks))\.(?P<index>\d+)\.(?P<suffix>.+)$")
LAYER = re.compile(r"^(?P<stack>model\.layers)\.(?P<index>\d+)\.(?P<suffix>.+)$")


@pytest.fixture(scope="module")
def manifest() -> dict:
    return json.loads(MANIFEST.read_text())


@pytest.fixture(scope="module")
def files(manifest: dict) -> dict[str, dict[str, list]]:
    """Each file's full listing, the compressed block and layer stacks expanded."""
    out = {}
    for name, listing in split_files(manifest["tensors"]).items():
        expanded = {}
        for key, value in listing.items():
            block, layer = BLOCK.match(key), LAYER.match(key)
            if layer and name == TEXT_ENCODER:
                for i in range(int(layer["index"]), manifest["gemma_layers"], manifest["gemma_layer_period"]):
                    expanded[f"model.layers.{i}.{layer['suffix']}"] = value
            elif block:
                if block["index"] == "0":
                    count = manifest["repeated_blocks"][f"{name}.safetensors:{block['stack']}"]
                    for i in range(count):
                        expanded[f"{block['stack']}.{i}.{block['suffix']}"] = value
            else:
                expanded[key] = value
        out[name] = expanded
    return out


def _summary(manifest: dict, name: str) -> dict:
    return manifest["summary"]["files"][f"{name}.safetensors"]


def _encoder(manifest: dict, files: dict) -> Gemma4Source:
    gemma = manifest["config_used"]["gemma"]
    file = listed_file(Path(f"/manifests/{TEXT_ENCODER}.safetensors"), files[TEXT_ENCODER])
    return Gemma4Source(file.path, gemma, Gemma4Config.from_dict(gemma), [file], single_file=True)


def _transformer(manifest: dict, files: dict) -> Checkpoint:
    file = listed_file(Path(f"/manifests/{TRANSFORMER}.safetensors"), files[TRANSFORMER])
    metadata = manifest["config_used"]["metadata"]
    file.metadata = {  # as the real file's safetensors metadata holds them: JSON strings
        "model_version": metadata["model_version"],
        "gemma_source_checkpoint": json.dumps(metadata["gemma_source_checkpoint"]),
    }
    return Checkpoint(file.path.parent, Layout.OFFICIAL, [file], config=metadata["config"])


def test_every_file_expands_to_the_summary_counts(manifest: dict, files: dict) -> None:
    for name in (TRANSFORMER, TEXT_ENCODER, DURATION_HEAD):
        assert len(files[name]) == _summary(manifest, name)["keys"], name


def test_gemma4_language_model_covers_the_text_encoder_file(manifest: dict, files: dict) -> None:
    encoder = _encoder(manifest, files)
    model = Gemma4TextModel(encoder.config)
    component = encoder.component()
    plan = plan_module(model, component, sanitize_gemma4_key)
    check_plan(model, plan)
    summary = _summary(manifest, TEXT_ENCODER)
    assert param_count(plan) == summary["gemma_language_model"]["params"]
    assert len(plan.entries) == summary["gemma_language_model"]["keys"]
    foreign = set(plan.foreign_keys)
    assert all(key.startswith(("vision_model.", "multi_modal_projector.", "audio_projector.", "text_embedding_"))
               for key in foreign)  # fmt: skip
    assert (
        len(foreign) == summary["gemma_vision_audio_embedders"]["keys"] + summary["text_embedding_projection"]["keys"]
    )
    full = [layer for layer in model.layers if not layer.sliding]
    assert len(full) == 8 and not hasattr(full[0].self_attn, "v_proj")  # values from the key projection


def test_text_projection_and_connectors_cover_their_keys(manifest: dict, files: dict) -> None:
    ckpt, encoder = _transformer(manifest, files), _encoder(manifest, files)
    assert is_ltx25(ckpt)
    check_text_encoder(ckpt, "gemma4", encoder.gemma_version, str(encoder.path))  # the released pair
    processor = build_text_processor_ltx25(ckpt, encoder)
    plan = plan_module(processor, text_processor_component(ckpt, encoder), sanitize_processor_key)
    check_plan(processor, plan)
    summary = _summary(manifest, TRANSFORMER)["embeddings_connectors"]
    projection = _summary(manifest, TEXT_ENCODER)["text_embedding_projection"]
    assert len(plan.entries) == summary["keys"] + projection["keys"]
    assert param_count(plan) == summary["params"] + projection["params"]
    assert not any("embeddings_connector" in key for key in plan.foreign_keys)


def test_duration_head_covers_its_file(manifest: dict, files: dict) -> None:
    dims = manifest["config_used"]["duration_head"]
    head = DurationHead(
        DurationHeadConfig.from_config({"transformer": manifest["config_used"]["metadata"]["config"]["transformer"]})
    )
    assert (head.config.video_dim, head.config.audio_dim) == (
        dims["video_cross_attention_dim"],
        dims["audio_cross_attention_dim"],
    )
    file = listed_file(Path(f"/manifests/{DURATION_HEAD}.safetensors"), files[DURATION_HEAD])

    plan = plan_module(
        head, Component("duration_head", file.tensors, {file.path: file}, "torch"), sanitize_duration_key
    )
    check_plan(head, plan)
    assert param_count(plan) == _summary(manifest, DURATION_HEAD)["params"] and not plan.foreign_keys
