"""Gemma 4 unified text encoder (LTX-2.5) against ltx-core 1.2.0's text path (fixture c / c2), and its loaders.

Fixtures: tests/fixtures/ltx25/ (see its README; copied by tests/reference/copy_ltx25_fixtures.py). The tower,
feature extractor and connectors are compared in float32 at the fixtures' tolerance, 1e-4 absolute, hidden states on
valid rows only (padded query rows depend on the attention backend and are discarded downstream).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx.utils import tree_flatten

from ltx_backend.errors import ErrorCode, LtxError
from ltx_backend.models.gemma4 import Gemma4Config, Gemma4TextModel
from ltx_backend.weights.checkpoint import open_checkpoint
from ltx_backend.weights.gemma4 import load_gemma4, load_gemma4_tokenizer, ltx_tokenize, open_gemma4
from ltx_backend.weights.ltx25 import load_text_processor_ltx25

FIXTURES = Path(__file__).parent / "fixtures" / "ltx25"
TE_FILE = FIXTURES / "te.safetensors"
TOLERANCE = 1e-4  # absolute, fixtures README (c)


@pytest.fixture(scope="module")
def refs() -> dict[str, np.ndarray]:
    return dict(np.load(FIXTURES / "refs.npz"))


@pytest.fixture(scope="module")
def model() -> Gemma4TextModel:
    return load_gemma4(TE_FILE, mx.float32)


def _ids(array: np.ndarray) -> mx.array:
    return mx.array(array[None].astype(np.int32))


def test_config_is_read_from_the_file_metadata() -> None:
    config = open_gemma4(TE_FILE).config
    assert config.layer_types == ("sliding_attention",) * 5 + ("full_attention",)
    assert (config.head_dim, config.num_key_value_heads) == (16, 2)
    assert (config.global_head_dim, config.num_global_key_value_heads, config.attention_k_eq_v) == (32, 1, True)
    assert config.full_rope.kind == "proportional" and config.full_rope.partial_rotary_factor == 0.25


def test_real_config_defaults_describe_the_12b_tower() -> None:
    config = Gemma4Config()
    full = [i for i, kind in enumerate(config.layer_types) if kind == "full_attention"]
    assert full == [5, 11, 17, 23, 29, 35, 41, 47] and len(config.layer_types) == 48


def test_rope_tables_match_transformers(refs, model: Gemma4TextModel) -> None:
    c = model.config
    np.testing.assert_allclose(c.sliding_rope.inv_freq(c.head_dim), refs["c.rope.sliding_attention.inv_freq"], 1e-6)
    np.testing.assert_allclose(c.full_rope.inv_freq(c.global_head_dim), refs["c.rope.full_attention.inv_freq"], 1e-6)


def test_tokenizer_from_the_file_prepends_bos_and_left_pads(refs) -> None:
    source = open_gemma4(TE_FILE)
    tokenizer = load_gemma4_tokenizer(source)
    prompt = str(refs["c.prompt"])
    assert tokenizer(prompt.strip())["input_ids"][0] != source.config.bos_token_id  # Gemma 4 adds no BOS itself
    ids, mask = ltx_tokenize(tokenizer, prompt, 128, source.config.bos_token_id, source.config.pad_token_id)
    np.testing.assert_array_equal(ids[0], refs["c.input_ids"])
    np.testing.assert_array_equal(mask[0], refs["c.attention_mask"])
    ids, mask = ltx_tokenize(tokenizer, prompt, 4, 2, 0)  # truncated: BOS plus the first 3 tokens
    assert ids[0, 0] == 2 and mask.all() and list(ids[0, 1:]) == tokenizer(prompt.strip())["input_ids"][:3]


def test_hidden_states_match_ltx_core(refs, model: Gemma4TextModel) -> None:
    states = model.hidden_states(_ids(refs["c.input_ids"]), _ids(refs["c.attention_mask"]))
    valid = refs["c.attention_mask"].astype(bool)
    assert len(states) == len(refs["c.hidden_states_valid"]) == model.config.num_hidden_layers + 1
    for index, (ours, theirs) in enumerate(zip(states, refs["c.hidden_states_valid"], strict=True)):
        error = float(np.abs(np.array(ours[0])[valid] - theirs).max())
        assert error <= TOLERANCE, f"hidden state {index}: {error}"


def test_sliding_window_that_cuts_matches_ltx_core(refs, model: Gemma4TextModel) -> None:
    windowed = Gemma4TextModel(dataclasses.replace(model.config, sliding_window=40))
    windowed.update(model.parameters())
    ids = _ids(refs["c2.input_ids"])
    states = windowed.hidden_states(ids, mx.ones(ids.shape, dtype=mx.int32))
    first = int(refs["c2.first_row"])
    for index, (ours, theirs) in enumerate(zip(states[1:], refs["c2.hidden_states_tail"], strict=True), start=1):
        error = float(np.abs(np.array(ours[0, first:]) - theirs).max())
        assert error <= TOLERANCE, f"hidden state {index}: {error}"
    unwindowed = model.hidden_states(ids, mx.ones(ids.shape, dtype=mx.int32))[-1]
    assert float(np.abs(np.array(unwindowed[0, first:]) - refs["c2.hidden_states_tail"][-1]).max()) > 100 * TOLERANCE


def test_text_path_to_connector_outputs_matches_ltx_core(refs, model: Gemma4TextModel) -> None:
    processor = load_text_processor_ltx25(open_checkpoint(FIXTURES / "connectors.safetensors"), open_gemma4(TE_FILE))
    mask = _ids(refs["c.attention_mask"])
    hidden = mx.stack(model.hidden_states(_ids(refs["c.input_ids"]), mask), axis=-1)
    video_features, audio_features = processor.feature_extractor(hidden, mask)
    video, audio, context_mask = processor(hidden, mask)
    for name, ours in (
        ("video_features", video_features),
        ("audio_features", audio_features),
        ("video_encoding", video),
        ("audio_encoding", audio),
    ):
        error = float(np.abs(np.array(ours[0]) - refs[f"c.{name}"]).max())
        assert error <= TOLERANCE, f"{name}: {error}"
    np.testing.assert_array_equal(np.array(context_mask[0]), refs["c.encoding_mask"])


def test_quantized_folder_loads_as_stored(tmp_path: Path, model: Gemma4TextModel) -> None:
    """An MLX-quantized Hugging Face style folder (model.language_model.* keys): bits and group size are read from
    the stored shapes when config.json does not say, and the loaded layers equal nn.quantize of the float model."""
    source = open_gemma4(TE_FILE)
    reference = load_gemma4(source, mx.float32)
    nn.quantize(reference, group_size=32, bits=8, class_predicate=lambda _, layer: isinstance(layer, nn.Linear))
    weights = {f"model.language_model.{key}": value for key, value in tree_flatten(reference.parameters())}
    mx.save_safetensors(str(tmp_path / "model.safetensors"), weights)
    (tmp_path / "config.json").write_text(json.dumps(json.loads(source.files[0].metadata["gemma_config"])))
    loaded = load_gemma4(tmp_path)
    assert isinstance(loaded.layers[5].self_attn.k_proj, nn.QuantizedLinear)
    assert (loaded.layers[5].self_attn.k_proj.bits, loaded.layers[5].self_attn.k_proj.group_size) == (8, 32)
    for (key, ours), (_, theirs) in zip(
        tree_flatten(loaded.parameters()), tree_flatten(reference.parameters()), strict=True
    ):
        assert mx.array_equal(ours, theirs), key


def test_a_gemma3_config_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gemma3", "text_config": {"model_type": "gemma3"}}))
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(LtxError) as info:
        open_gemma4(tmp_path)
    assert info.value.code is ErrorCode.TEXT_ENCODER_INVALID and "Gemma 4" in info.value.hint + info.value.message


def test_hf_folder_matches_transformers_gemma4() -> None:
    """transformers' own Gemma4UnifiedForConditionalGeneration on a tiny config (tests/reference/make_gemma4_refs.py):
    two full layers, a sliding window (12) shorter than the prompts, a batch of two left-padded prompts, bf16 weights
    in the Hugging Face folder layout (model.language_model.* keys, vision/audio embedders beside them)."""
    refs = dict(np.load(FIXTURES / "gemma4_hf_refs.npz"))
    folder = FIXTURES / "tiny-gemma4-hf"
    source = open_gemma4(folder)
    tokenizer = load_gemma4_tokenizer(source)
    prompt = "  a woman walks through a city street at night while neon reflections glow on the rain and the camera "
    ids, mask = ltx_tokenize(tokenizer, prompt + "slowly pans left  ", 40, 2, 0)
    np.testing.assert_array_equal(ids[0], refs["input_ids"][0])
    np.testing.assert_array_equal(mask[0], refs["attention_mask"][0])
    model = load_gemma4(source, mx.float32)
    states = model.hidden_states(mx.array(refs["input_ids"].astype(np.int32)), mx.array(refs["attention_mask"]))
    valid = refs["attention_mask"].astype(bool)
    assert len(states) == refs["hidden_states"].shape[0] == 9
    for index, (ours, theirs) in enumerate(zip(states, refs["hidden_states"], strict=True)):
        error = float(np.abs(np.array(ours)[valid] - theirs[valid]).max() / np.abs(theirs[valid]).max())
        assert error <= TOLERANCE, f"hidden state {index}: {error}"


def test_encoder_encodes_a_prompt_like_ltx_core(refs) -> None:
    from ltx_backend.pipeline.text_gemma4 import Gemma4TextEncoder

    encoder = Gemma4TextEncoder(TE_FILE, mx.float32)
    encoded = encoder.encode(str(refs["c.prompt"]), max_length=128)
    assert encoded.hidden_states.shape == (1, 128, encoder.hidden_size, encoder.num_states) == (1, 128, 64, 7)
    np.testing.assert_array_equal(np.array(encoded.attention_mask[0]), refs["c.attention_mask"])
    valid = refs["c.attention_mask"].astype(bool)
    ours = np.moveaxis(np.array(encoded.hidden_states[0]), -1, 0)[:, valid]
    assert float(np.abs(ours - refs["c.hidden_states_valid"]).max()) <= TOLERANCE
    with pytest.raises(LtxError) as info:
        encoder.enhance("a dog")
    assert info.value.code is ErrorCode.INVALID_PARAMS
    encoder.release()
    with pytest.raises(RuntimeError):
        encoder.encode("a dog")


def test_layer_types_default_and_last_layer_as_transformers() -> None:
    text = {"model_type": "gemma4_unified_text", "num_hidden_layers": 8}
    assert Gemma4Config.from_dict(text).layer_types == ("sliding_attention",) * 5 + ("full_attention",) + (
        "sliding_attention",
        "full_attention",
    )  # the pattern (5 sliding, 1 full), the last layer forced to full
    types = ["sliding_attention"] * 3
    assert (
        Gemma4Config.from_dict({**text, "num_hidden_layers": 3, "layer_types": types}).layer_types[-1]
        == "full_attention"
    )
    with pytest.raises(ValueError, match="KV-shared"):
        Gemma4Config.from_dict({**text, "num_kv_shared_layers": 2})
