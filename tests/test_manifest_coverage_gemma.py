"""The Gemma 3 12B text-encoder loader against the key listings of mlx-community's bf16 and 4-bit repos, no weights.

`tests/fixtures/manifests/gemma-3-12b-it-mlx.json` (written by `tests/reference/extract_manifests.py`) lists every
tensor of mlx-community/gemma-3-12b-it-bf16 and gemma-3-12b-it-4bit in mlx-vlm naming (``language_model.model.*``,
``vision_tower.*``, ``multi_modal_projector.*``) and the config.json they were derived from (ltx_core's 12B config;
the 4-bit one adds ``quantization``). For each repo the full-size `Gemma3TextModel` is built lazily from that config
(nothing is evaluated), the 4-bit repo's quantized layers are swapped in as `load_gemma` does, and the load is
planned against a data-less component holding the listing. Every language-model tensor must feed exactly one
parameter, every parameter must be fed with the right shape, the vision tower and projector must be foreign, and
the parameter count must be the manifest summary's minus the vision tower and projector.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import mlx.nn as nn
import pytest
from manifest_checkpoint import GEMMA_LISTINGS, check_plan, listed_file, load_gemma_manifest, param_count

import ltx_backend.weights.gemma as gemma_loader
from ltx_backend.models.gemma3 import Gemma3Config, Gemma3TextModel, sanitize_gemma_key
from ltx_backend.weights.checkpoint import Component
from ltx_backend.weights.load import plan_module, quantize_like
from ltx_backend.weights.plan import LoadPlan

CONFIGS = {"tensors": "config", "tensors_4bit": "config_4bit"}
TENSOR_COUNTS = {"tensors": "tensor_count_bf16", "tensors_4bit": "tensor_count_4bit"}  # summary keys
STORED_BYTES = {"tensors": "bytes_bf16", "tensors_4bit": "bytes_4bit"}
ITEMSIZE = {"bfloat16": 2, "float16": 2, "float32": 4, "uint32": 4}
LANGUAGE_MODEL = "language_model."
FOREIGN = ("vision_tower.", "multi_modal_projector.")
# The language model: embeddings 262208 x 3840, 48 layers of 224,148,992 (q/o 4096 x 3840, k/v 2048 x 3840, MLP
# 3 x 15360 x 3840, 4 norms of 3840 and q/k norms of 256), the final norm. The vision tower and projector hold the
# other 421,290,864 of the summary's 12,187,325,040.
LAYER_PARAMS = 2 * 4096 * 3840 + 2 * 2048 * 3840 + 3 * 15360 * 3840 + 4 * 3840 + 2 * 256
LM_PARAMS = 262208 * 3840 + 48 * LAYER_PARAMS + 3840
VISION_AND_PROJECTOR_PARAMS = 421_290_864
PROJECTIONS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj")
PROJECTIONS += ("mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")
GLOBAL_LAYERS = list(range(5, 48, 6))  # one full-attention layer every 6: 5, 11, ..., 47


@pytest.fixture(scope="module")
def manifest() -> dict:
    return load_gemma_manifest()


def listing_component(listing: dict) -> Component:
    """The repo as `gemma_component` sees it, from one data-less file holding the whole listing."""
    file = listed_file(Path("/manifests/gemma-3-12b-it/model.safetensors"), listing)
    return Component("text_encoder", file.tensors, {file.path: file}, "mlx")


def build_and_plan(config: dict, component: Component) -> tuple[Gemma3TextModel, LoadPlan]:
    """Build the model lazily and plan its load as `load_gemma` does (quantized layers swapped in first)."""
    model = Gemma3TextModel(Gemma3Config.from_dict(config))
    if component.quantized_paths:
        quantization = config["quantization"]
        quantize_like(model, component, sanitize_gemma_key, quantization["bits"], quantization["group_size"])
    return model, plan_module(model, component, sanitize_gemma_key)


def quantized_modules(model: nn.Module) -> dict[str, nn.Module]:
    return {
        path: module
        for path, module in model.named_modules()
        if isinstance(module, (nn.QuantizedLinear, nn.QuantizedEmbedding))
    }


def logical_params(plan: LoadPlan, bits: int) -> int:
    """Parameters of the float model: packed uint32 weights unpacked, quantization scales and biases left out."""
    quantized = {e.param.key.removesuffix(".weight") for e in plan.entries if e.source.dtype == "U32"}
    total = 0
    for entry in plan.entries:
        owner, _, leaf = entry.param.key.rpartition(".")
        if owner in quantized and leaf in ("scales", "biases"):
            continue
        size = math.prod(entry.param.shape)
        total += size * 32 // bits if entry.source.dtype == "U32" else size
    return total


def listed_params(listing: dict, prefixes: tuple[str, ...]) -> int:
    return sum(math.prod(shape) for key, (shape, _) in listing.items() if key.startswith(prefixes))


def test_fixture_matches_the_manifest_summary(manifest: dict) -> None:
    summary = manifest["summary"]
    config, vision = manifest["config"]["text_config"], manifest["config"]["vision_config"]
    assert manifest["repeated_blocks"] == {
        "language_model.model.layers": config["num_hidden_layers"],
        "vision_tower.vision_model.encoder.layers": vision["num_hidden_layers"],
    }
    assert manifest["config_4bit"] == {**manifest["config"], "quantization": {"group_size": 64, "bits": 4}}
    for name in GEMMA_LISTINGS:
        listing = manifest[name]
        assert len(listing) == summary[TENSOR_COUNTS[name]], name
        stored = sum(math.prod(shape) * ITEMSIZE[dtype] for shape, dtype in listing.values())
        assert stored == summary[STORED_BYTES[name]], name
        assert all(key.startswith((LANGUAGE_MODEL, *FOREIGN)) for key in listing), name
    bf16 = manifest["tensors"]
    assert listed_params(bf16, (LANGUAGE_MODEL,)) + listed_params(bf16, FOREIGN) == summary["param_count"]
    assert listed_params(bf16, (LANGUAGE_MODEL,)) == LM_PARAMS == 11_766_034_176
    assert listed_params(bf16, FOREIGN) == VISION_AND_PROJECTOR_PARAMS
    # The vision tower and projector are stored as in the bf16 repo (assumed by the manifest, see its confidence).
    foreign = {key: value for key, value in bf16.items() if key.startswith(FOREIGN)}
    assert {k: v for k, v in manifest["tensors_4bit"].items() if k.startswith(FOREIGN)} == foreign


@pytest.mark.parametrize("name", GEMMA_LISTINGS)
def test_language_model_plans_exactly(manifest: dict, name: str) -> None:
    listing, config = manifest[name], manifest[CONFIGS[name]]
    component = listing_component(listing)
    model, plan = build_and_plan(config, component)
    check_plan(model, plan)  # every parameter planned once, stored shape == parameter shape

    # Every language-model tensor is read exactly once; the vision tower and projector are foreign; nothing else.
    language_model = sorted(key for key in listing if key.startswith(LANGUAGE_MODEL))
    assert sorted(entry.source.name for entry in plan.entries) == language_model
    assert sorted(plan.foreign_keys) == sorted(key for key in listing if key.startswith(FOREIGN))
    assert len(language_model) + len(plan.foreign_keys) == len(listing)
    assert {e.permutation for e in plan.entries} == {None}  # mlx-vlm layout: nothing to transpose

    # lm_head is tied to embed_tokens: neither stored nor a parameter of the model.
    assert not any("lm_head" in key for key in listing)
    assert not any("lm_head" in entry.param.key for entry in plan.entries)

    quantized = quantized_modules(model)
    if name == "tensors":
        assert "quantization" not in config and not component.quantized_paths and quantized == {}
        assert {entry.source.dtype for entry in plan.entries} == {"BF16"}
        assert param_count(plan) == LM_PARAMS
        return
    # 4-bit: embed_tokens and every attention/MLP projection, group 64; the norms stay bf16.
    bits, group = config["quantization"]["bits"], config["quantization"]["group_size"]
    layers = len(model.layers)
    expected = {"embed_tokens"} | {f"layers.{i}.{proj}" for i in range(layers) for proj in PROJECTIONS}
    assert set(quantized) == expected
    assert isinstance(quantized["embed_tokens"], nn.QuantizedEmbedding)
    assert {(module.bits, module.group_size) for module in quantized.values()} == {(bits, group)} == {(4, 64)}
    packed = {e.param.key.removesuffix(".weight") for e in plan.entries if e.source.dtype == "U32"}
    assert packed == expected
    norms = [e for e in plan.entries if e.param.key.rpartition(".")[0].endswith(("norm", "layernorm"))]
    assert len(norms) == 6 * layers + 1  # 4 layer norms + q_norm/k_norm per layer, and the final norm
    assert {(e.source.dtype, e.param.kind) for e in norms} == {("BF16", "plain")}
    assert logical_params(plan, bits) == LM_PARAMS


@pytest.mark.parametrize("name", GEMMA_LISTINGS)
def test_load_gemma_plans_what_the_test_plans(
    manifest: dict, name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`load_gemma` (config.json read from disk, loading replaced by planning) plans what the test plans."""
    config = manifest[CONFIGS[name]]
    (tmp_path / "config.json").write_text(json.dumps(config))
    component = listing_component(manifest[name])
    recorded: list[LoadPlan] = []

    def plan_only(module, component, sanitize=lambda key: key, dtype=None) -> LoadPlan:
        recorded.append(plan_module(module, component, sanitize))
        return recorded[-1]

    monkeypatch.setattr(gemma_loader, "gemma_component", lambda root: component)
    monkeypatch.setattr(gemma_loader, "load_module", plan_only)
    model = gemma_loader.load_gemma(tmp_path)
    expected_model, expected = build_and_plan(config, component)
    assert len(recorded) == 1
    got = recorded[0]
    assert {(e.param, e.source, e.permutation) for e in got.entries} == {
        (e.param, e.source, e.permutation) for e in expected.entries
    }
    assert sorted(got.foreign_keys) == sorted(expected.foreign_keys)
    assert {p: (m.bits, m.group_size) for p, m in quantized_modules(model).items()} == {
        p: (m.bits, m.group_size) for p, m in quantized_modules(expected_model).items()
    }


def test_config_and_key_mapping(manifest: dict) -> None:
    config = Gemma3Config.from_dict(manifest["config"])
    assert Gemma3Config.from_dict(manifest["config_4bit"]) == config
    assert (config.vocab_size, config.hidden_size, config.intermediate_size) == (262208, 3840, 15360)
    assert (config.num_hidden_layers, config.num_attention_heads, config.num_key_value_heads) == (48, 16, 8)
    assert (config.head_dim, config.query_pre_attn_scalar, config.rms_norm_eps) == (256, 256, 1e-6)
    assert (config.rope_theta, config.rope_local_base_freq, config.rope_scaling_factor) == (1e6, 1e4, 8.0)
    assert (config.sliding_window, config.sliding_window_pattern) == (1024, 6)
    assert len(config.layer_types) == 48
    assert [i for i, kind in enumerate(config.layer_types) if kind == "full_attention"] == GLOBAL_LAYERS
    assert set(config.layer_types) == {"full_attention", "sliding_attention"}

    model = Gemma3TextModel(config)
    assert [i for i, layer in enumerate(model.layers) if not layer.sliding] == GLOBAL_LAYERS
    for index, layer in enumerate(model.layers):
        attn = layer.self_attn
        expected = (1e4, 1.0) if layer.sliding else (1e6, 1 / 8)  # local base; global base with linear scaling 8
        assert (attn.rope_base, attn.rope_scale) == expected, index

    assert sanitize_gemma_key("language_model.model.layers.0.self_attn.q_proj.weight") == (
        "layers.0.self_attn.q_proj.weight"
    )
    assert sanitize_gemma_key("language_model.model.embed_tokens.scales") == "embed_tokens.scales"
    for foreign in (
        "vision_tower.vision_model.encoder.layers.0.mlp.fc1.weight",
        "multi_modal_projector.mm_input_projection_weight",
        "language_model.lm_head.weight",
        "lm_head.weight",
    ):
        assert sanitize_gemma_key(foreign) is None, foreign


def _quantized_vision_tower(listing: dict) -> dict:
    """The 4-bit repo had mlx-vlm also quantized the vision tower's Linear and Embedding layers whose width is a
    multiple of 64 (all but ``mlp.fc2``, 4304 wide; the manifest assumes they stay bf16)."""
    out = {}
    for key, (shape, dtype) in listing.items():
        if key.startswith(FOREIGN) and key.endswith(".weight") and len(shape) == 2 and shape[1] % 64 == 0:
            base = key.removesuffix(".weight")
            out[key] = [[shape[0], shape[1] // 8], "uint32"]
            out[f"{base}.scales"] = out[f"{base}.biases"] = [[shape[0], shape[1] // 64], "bfloat16"]
        else:
            out[key] = [shape, dtype]
    return out


def test_4bit_repo_with_a_quantized_vision_tower(manifest: dict) -> None:
    listing = _quantized_vision_tower(manifest["tensors_4bit"])
    # q/k/v/out_proj and fc1 of the 27 layers, and the position embedding, gain scales and biases.
    assert len(listing) == len(manifest["tensors_4bit"]) + 2 * (27 * 5 + 1)
    component = listing_component(listing)
    model, plan = build_and_plan(manifest["config_4bit"], component)
    check_plan(model, plan)
    _, reference = build_and_plan(manifest["config_4bit"], listing_component(manifest["tensors_4bit"]))
    assert {(e.param, e.source.name) for e in plan.entries} == {(e.param, e.source.name) for e in reference.entries}
    assert sorted(plan.foreign_keys) == sorted(key for key in listing if key.startswith(FOREIGN))


def _transformers5_spelling(config: dict) -> dict:
    """config.json as transformers >= 5 saves it: the RoPE settings per layer type in ``rope_parameters``."""
    text = {k: v for k, v in config["text_config"].items() if k not in ("rope_scaling", "rope_theta")}
    del text["rope_local_base_freq"]
    text["rope_parameters"] = {
        "sliding_attention": {"rope_type": "default", "rope_theta": 10000},
        "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1000000},
    }
    return {**config, "text_config": text}


def test_transformers5_rope_parameters_spelling(manifest: dict) -> None:
    assert Gemma3Config.from_dict(_transformers5_spelling(manifest["config"])) == Gemma3Config.from_dict(
        manifest["config"]
    )
