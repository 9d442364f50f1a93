"""Gemma 3 text encoder against Hugging Face transformers on a tiny random model, plus tokenisation and errors.

References come from `tests/reference/make_gemma_refs.py` (transformers' Gemma3ForConditionalGeneration, float32
from bf16-stored weights): 7 layers with one global layer, a sliding window (16) shorter than the prompts, query
scaling that is not 1/sqrt(head_dim), a tiny tokenizer with Gemma's special tokens and chat template.
Padded positions are not compared: HF's value there depends on its attention backend and nothing reads it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest

from ltx_backend.errors import ErrorCode, LtxError
from ltx_backend.pipeline.text import TextEncoder, enhance_or_keep, generate
from ltx_backend.weights.gemma import load_gemma

FIXTURES = Path(__file__).parent / "fixtures" / "gemma"
REPO = FIXTURES / "tiny-gemma3"
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def refs() -> dict[str, np.ndarray]:
    return dict(np.load(FIXTURES / "refs.npz"))


@pytest.fixture(scope="module")
def encoder() -> TextEncoder:
    return TextEncoder(REPO, mx.float32)


def test_all_hidden_states_match_transformers(refs, encoder: TextEncoder) -> None:
    ids, mask = mx.array(refs["input_ids"]), mx.array(refs["attention_mask"])
    states = encoder.model.hidden_states(ids, mask)
    assert len(states) == refs["hidden_states"].shape[0] == encoder.num_states
    valid = refs["attention_mask"].astype(bool)
    for index, (ours, theirs) in enumerate(zip(states, refs["hidden_states"], strict=True)):
        ours, theirs = np.array(ours)[valid], theirs[valid]
        error = np.abs(ours - theirs).max() / np.abs(theirs).max()
        assert error <= TOLERANCE, f"hidden state {index}: {error}"


def test_tokenisation_left_pads_to_the_length(refs, encoder: TextEncoder) -> None:
    ids, mask = encoder.tokenize("  a  prompt with spaces around  ", max_length=64)
    assert ids.shape == mask.shape == (1, 64)
    mask_np = np.array(mask)[0]
    assert mask_np[0] == 0 and mask_np[-1] == 1 and np.all(np.diff(mask_np) >= 0)  # left padding
    first = int(np.argmax(mask_np))
    assert int(np.array(ids)[0, first]) == encoder.tokenizer.chat.bos_token_id
    assert (np.array(ids)[0, :first] == encoder.tokenizer.chat.pad_token_id).all()


def test_encode_stacks_every_state_for_the_feature_extractor(encoder: TextEncoder) -> None:
    encoded = encoder.encode("a cat walks on the beach", max_length=64)
    assert encoded.hidden_states.shape == (1, 64, encoder.hidden_size, encoder.num_states)
    assert encoded.attention_mask.shape == (1, 64)


def test_encode_computes_the_real_tokens_only_with_the_padded_values(encoder: TextEncoder) -> None:
    """Running the unpadded suffix at its RoPE offset gives the padded sequence's states at every real position."""
    for prompt in ("a cat walks on the beach", "word " * 100):
        ids, mask = encoder.tokenize(prompt, max_length=64)
        padded = np.array(mx.stack(encoder.model.hidden_states(ids, mask), axis=-1))
        encoded = np.array(encoder.encode(prompt, max_length=64).hidden_states)
        valid = np.array(mask)[0].astype(bool)
        np.testing.assert_allclose(encoded[0, valid], padded[0, valid], rtol=1e-5, atol=1e-5)
        assert not encoded[0, ~valid].any()


def test_greedy_generation_matches_transformers(refs, encoder: TextEncoder) -> None:
    prompt = [int(t) for t in refs["gen.prompt_ids"]]
    new = generate(encoder.model, prompt, len(refs["gen.new_ids"]), 0.0, seed=0, stop=encoder.stop_ids)
    assert new == [int(t) for t in refs["gen.new_ids"]]


def test_sampled_enhancement_is_seeded_and_falls_back(encoder: TextEncoder) -> None:
    first = encoder.enhance("a dog runs", seed=3, max_new_tokens=8)
    assert first == encoder.enhance("a dog runs", seed=3, max_new_tokens=8)
    assert isinstance(first, str)
    warnings: list[str] = []

    class Broken:
        def enhance(self, *args, **kwargs):
            raise RuntimeError("out of memory")

    assert enhance_or_keep(Broken(), "a dog runs", warnings.append) == "a dog runs"
    assert warnings and "failed" in warnings[0]


@pytest.mark.parametrize("bits", [4, 8])
def test_quantized_tiny_gemma_runs_close_to_its_dequantized_weights(tmp_path: Path, refs, bits: int) -> None:
    """mlx-community's 4-bit repos quantize the language model's linears and embeddings; load one such repo."""
    model = load_gemma(REPO, mx.float32)
    nn.quantize(model, group_size=32, bits=bits)
    weights = {f"language_model.model.{k}": v for k, v in nn.utils.tree_flatten(model.parameters())}
    repo = tmp_path / "q"
    shutil.copytree(REPO, repo, ignore=shutil.ignore_patterns("*.safetensors"))
    mx.save_safetensors(str(repo / "model.safetensors"), weights)
    config = json.loads((repo / "config.json").read_text())
    config["quantization"] = {"group_size": 32, "bits": bits}
    (repo / "config.json").write_text(json.dumps(config))

    loaded = TextEncoder(repo, mx.float32)
    assert isinstance(loaded.model.layers[0].mlp.up_proj, nn.QuantizedLinear)
    ids, mask = mx.array(refs["input_ids"]), mx.array(refs["attention_mask"])
    ours = loaded.model.hidden_states(ids, mask)[-1]
    expected = model.hidden_states(ids, mask)[-1]
    np.testing.assert_allclose(np.array(ours), np.array(expected), atol=1e-5)
    if bits == 8:  # 8 bits stays close to float; 4 bits on a 64-wide random model does not (measured 0.6 of peak)
        full = load_gemma(REPO, mx.float32).hidden_states(ids, mask)[-1]
        valid = refs["attention_mask"].astype(bool)
        drift = np.abs(np.array(ours)[valid] - np.array(full)[valid]).max() / np.abs(np.array(full)[valid]).max()
        assert drift < 0.05


def test_vision_tower_is_listed_but_never_loaded() -> None:
    from ltx_backend.models.gemma3 import sanitize_gemma_key
    from ltx_backend.weights.gemma import gemma_component
    from ltx_backend.weights.load import plan_module

    plan = plan_module(load_gemma(REPO), gemma_component(REPO), sanitize_gemma_key)
    foreign = plan.foreign_keys
    assert foreign and all(key.startswith(("vision_tower.", "multi_modal_projector.")) for key in foreign)


def test_clear_errors_for_wrong_text_encoders(tmp_path: Path) -> None:
    no_tokenizer = tmp_path / "no_tokenizer"
    shutil.copytree(REPO, no_tokenizer, ignore=shutil.ignore_patterns("tokenizer*"))
    with pytest.raises(LtxError) as error:
        TextEncoder(no_tokenizer)
    assert error.value.code is ErrorCode.TEXT_ENCODER_INVALID and "tokenizer" in error.value.message

    wrong = tmp_path / "llama"
    shutil.copytree(REPO, wrong)
    config = json.loads((wrong / "config.json").read_text())
    config["text_config"]["model_type"] = "llama"
    (wrong / "config.json").write_text(json.dumps(config))
    with pytest.raises(LtxError) as error:
        TextEncoder(wrong)
    assert error.value.code is ErrorCode.TEXT_ENCODER_INVALID and "Gemma 3" in error.value.message
