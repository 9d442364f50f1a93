"""Copy the real-checkpoint key manifests (audio, video, transformer/text connector; Gemma) into the repository.

The manifests in ``shared/reference/manifests`` list every tensor of the real LTX-2 checkpoints (tens of GB that
tests cannot download). `tests/test_manifest_coverage.py`, `tests/test_manifest_coverage_video.py` and
`tests/test_manifest_coverage_transformer.py` need the audio components (audio VAE, vocoder), the video components
(video VAE decoder/encoder, latent upscalers) and the transformer with the text connectors and text projection, so
this script writes ``tests/fixtures/manifests/<manifest>.json`` with:

* ``source``, ``layout`` (official / unified / split) and ``version`` ("2.0" or "2.3");
* ``config``: the config sections these loaders read (``audio_vae``, ``vocoder``, ``vae``, ``transformer``): from
  ``config_used`` for the official files, from the companion ``embedded_config.json`` for the split one, ``{}`` for
  the LTX-2.0 unified file (which has no embedded config: our LTX-2.0 defaults apply);
* ``model_info`` (companion ``config.json``) and ``split_manifest`` (companion ``split_model.json``) where present;
* ``summary``: the published/derived counts of those components, where the manifest gives them;
* ``known_or_possible_differences_in_dgrauet_repo`` (split only), verbatim;
* ``repeated_blocks``: see "Compression" below;
* ``possible_extra_tensors`` (official only), verbatim: VAE statistics that real files may carry but nothing reads;
* ``tensors``: ``{key: [shape, dtype]}`` of the audio and video components' keys, unchanged: ``audio_vae.``/
  ``vocoder.``/``vae.`` (official), plus ``vae_decoder.``/``vae_encoder.``/``upsampler.`` (unified), or the
  ``<file>.safetensors:`` keys of the audio, VAE and upscaler files (split);
* ``transformer_tensors``: the transformer, connector and text-projection keys, compressed (below):
  ``model.diffusion_model.``/``text_embedding_projection.`` (official), ``transformer.``/``connector.``/
  ``text_embedding_projection.`` (unified), ``transformer.safetensors:``/``connector.safetensors:`` (split).

Compression. The transformer listings hold thousands of keys (48 blocks of 72 to 142 tensors, plus 2 or 8 connector
blocks), and every block of a stack holds the same keys with the same shapes and dtypes. So ``transformer_tensors``
keeps every key outside the block stacks, and of each stack (a key prefix ending in ``transformer_blocks`` or
``transformer_1d_blocks``, e.g. ``model.diffusion_model.video_embeddings_connector.transformer_1d_blocks``) only
blocks 0 and 1; ``repeated_blocks`` maps each stack's prefix to its number of blocks. Expanding a stack copies block
0's ``{suffix: [shape, dtype]}`` to every index below that count (`tests/manifest_checkpoint.py`, `expand_blocks`).
This is exact: before compressing, the script asserts that each stack's indices are 0..n-1 and that every block's
suffix -> [shape, dtype] map equals block 0's, then that expanding the compressed listing gives back the original
listing exactly. Nothing else is left out or changed.

The official manifests hold no upscaler tensors: Lightricks ships the upscalers as separate files
(``ltx-2-spatial-upscaler-x2-1.0.safetensors`` ...), which these manifests do not list.

Gemma. ``gemma-3-12b-it-mlx.json`` (mlx-community/gemma-3-12b-it-bf16 and gemma-3-12b-it-4bit, mlx-vlm naming) is
written for `tests/test_manifest_coverage_gemma.py` with ``source``, ``derivation``, ``confidence`` and ``summary``
verbatim, and:

* ``config``: the repo's ``config.json``. The manifest was derived from the Gemma 3 12B config that ltx_core 1.0.0
  ships (``ltx_core/text_encoders/gemma/config.py``, ``GEMMA3_CONFIG_FOR_LTX.to_dict()``), copied as `GEMMA_CONFIG`;
* ``config_4bit``: the same plus the ``quantization`` block mlx-vlm writes (group 64, 4 bits);
* ``repeated_blocks``: ``language_model.model.layers`` (48 decoder layers) and
  ``vision_tower.vision_model.encoder.layers`` (27 SigLIP layers), the same for both listings;
* ``tensors`` (bf16) and ``tensors_4bit``: every key, with both layer stacks compressed to layers 0 and 1 exactly as
  the transformer blocks above (``GEMMA_LAYER_KEY`` tells the stacks' keys; `load_gemma_manifest` expands them).

Run from the repository root. Provenance: the full manifests were handed to the project outside this repository
(by default the script looks for them in ``../shared/reference/manifests``); only their extracts are committed:

    .venv/bin/python tests/reference/extract_manifests.py [MANIFEST_DIR]
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEFAULT_SOURCE = REPO.parent / "shared" / "reference" / "manifests"
TARGET = REPO / "tests" / "fixtures" / "manifests"
sys.path.insert(0, str(REPO / "tests"))
from manifest_checkpoint import (  # noqa: E402
    BLOCK_KEY,
    GEMMA_LAYER_KEY,
    GEMMA_LISTINGS,
    GEMMA_MANIFEST,
    KEPT_BLOCKS,
    expand_blocks,
)

# manifest name -> (layout, LTX version) of the LTX checkpoints; the Gemma manifest is extracted by `extract_gemma`.
MANIFESTS = {
    "ltx-2-19b-official": ("official", "2.0"),
    "ltx-2.3-22b-official": ("official", "2.3"),
    "ltx2-mlx-av-unified": ("unified", "2.0"),
    "ltx-2.3-mlx-q4-split": ("split", "2.3"),
}
CONFIG_SECTIONS = ("audio_vae", "vocoder", "vae", "transformer")
# Component prefixes of the official and unified files.
COMPONENTS = ("audio_vae", "vocoder", "vae", "vae_decoder", "vae_encoder", "upsampler")
TRANSFORMER_COMPONENTS = ("model.diffusion_model", "transformer", "connector", "text_embedding_projection")
SPLIT_FILES = (
    "audio_vae", "vocoder", "vae_decoder", "vae_encoder", "upsampler",
    "spatial_upscaler_x2_v1_1", "spatial_upscaler_x1_5_v1_0", "temporal_upscaler_x2_v1_0",
)  # fmt: skip
SPLIT_TRANSFORMER_FILES = ("transformer", "connector")
# Name prefixes in the official summary.components.
OFFICIAL_SUMMARY = ("audio_vae", "vocoder", "vae_", "transformer", "embeddings_processor")
GEMMA_VERBATIM = ("source", "derivation", "confidence", "summary")
# ltx_core 1.0.0's `GEMMA3_CONFIG_FOR_LTX.to_dict()` (text_encoders/gemma/config.py), which the manifest derives from.
GEMMA_CONFIG = {
    "architectures": ["Gemma3ForConditionalGeneration"],
    "boi_token_index": 255999,
    "eoi_token_index": 256000,
    "eos_token_id": [1, 106],
    "image_token_index": 262144,
    "initializer_range": 0.02,
    "mm_tokens_per_image": 256,
    "model_type": "gemma3",
    "text_config": {
        "attention_bias": False,
        "attention_dropout": 0.0,
        "attn_logit_softcapping": None,
        "cache_implementation": "hybrid",
        "final_logit_softcapping": None,
        "head_dim": 256,
        "hidden_activation": "gelu_pytorch_tanh",
        "hidden_size": 3840,
        "initializer_range": 0.02,
        "intermediate_size": 15360,
        "max_position_embeddings": 131072,
        "model_type": "gemma3_text",
        "num_attention_heads": 16,
        "num_hidden_layers": 48,
        "num_key_value_heads": 8,
        "query_pre_attn_scalar": 256,
        "rms_norm_eps": 1e-06,
        "rope_local_base_freq": 10000,
        "rope_scaling": {"factor": 8.0, "rope_type": "linear"},
        "rope_theta": 1000000,
        "sliding_window": 1024,
        "sliding_window_pattern": 6,
        "torch_dtype": "float32",
        "use_cache": True,
        "vocab_size": 262208,
    },
    "torch_dtype": "bfloat16",
    "transformers_version": "4.51.0",
    "vision_config": {
        "attention_dropout": 0.0,
        "hidden_act": "gelu_pytorch_tanh",
        "hidden_size": 1152,
        "image_size": 896,
        "intermediate_size": 4304,
        "layer_norm_eps": 1e-06,
        "model_type": "siglip_vision_model",
        "num_attention_heads": 16,
        "num_channels": 3,
        "num_hidden_layers": 27,
        "patch_size": 14,
        "torch_dtype": "float32",
        "vision_use_head": False,
    },
}
GEMMA_QUANTIZATION = {"group_size": 64, "bits": 4}  # mlx-community/gemma-3-12b-it-4bit (manifest derivation)


def _sections(config: dict) -> dict:
    return {name: config[name] for name in CONFIG_SECTIONS if name in config}


def _summary(layout: str, summary: dict) -> dict:
    if layout == "official":
        components = summary.get("components", {})
        return {name: value for name, value in components.items() if name.startswith(OFFICIAL_SUMMARY)}
    if layout == "split":
        per_file = summary.get("per_file", {})
        names = [f"{name}.safetensors" for name in SPLIT_FILES + SPLIT_TRANSFORMER_FILES]
        return {name: per_file[name] for name in names if name in per_file}
    per_prefix = summary.get("keys_per_prefix", {})
    kept = {"keys_per_prefix": {n: per_prefix[n] for n in COMPONENTS + TRANSFORMER_COMPONENTS if n in per_prefix}}
    if "duplicated" in summary:  # the connector copies the unified file keeps under `transformer.`
        kept["duplicated"] = summary["duplicated"]
    return kept


def compress_blocks(tensors: dict, pattern: re.Pattern = BLOCK_KEY) -> tuple[dict, dict[str, int]]:
    """Keep blocks 0 and 1 of every block stack (and every other key); check the dropped blocks repeat block 0."""
    stacks: dict[str, dict[int, dict[str, list]]] = {}
    for key, value in tensors.items():
        match = pattern.match(key)
        if match:
            blocks = stacks.setdefault(match["stack"], {})
            blocks.setdefault(int(match["index"]), {})[match["suffix"]] = value
    counts = {}
    for stack, blocks in stacks.items():
        assert sorted(blocks) == list(range(len(blocks))), f"{stack}: block indices are not 0..n-1"
        for index, block in blocks.items():
            assert block == blocks[0], f"{stack}.{index} differs from {stack}.0: the stack cannot be compressed"
        counts[stack] = len(blocks)
    kept = {}
    for key, value in tensors.items():
        match = pattern.match(key)
        if match is None or int(match["index"]) < KEPT_BLOCKS:
            kept[key] = value
    assert expand_blocks(kept, counts, pattern) == tensors, "compression is not exact"
    return kept, counts


def extract(manifest: dict, layout: str, version: str) -> dict:
    companions = manifest.get("companion_files", {})
    if layout == "official":
        config = _sections(manifest["config_used"])
    else:
        config = _sections(companions.get("embedded_config.json", {}))
    if layout == "split":
        prefixes = tuple(f"{name}.safetensors:" for name in SPLIT_FILES)
        transformer_prefixes = tuple(f"{name}.safetensors:" for name in SPLIT_TRANSFORMER_FILES)
    else:
        prefixes = tuple(f"{name}." for name in COMPONENTS)
        transformer_prefixes = tuple(f"{name}." for name in TRANSFORMER_COMPONENTS)
    out: dict = {
        "source": manifest["source"],
        "layout": layout,
        "version": version,
        "config": config,
        "model_info": companions.get("config.json", {}),
        "split_manifest": companions.get("split_model.json", {}),
        "summary": _summary(layout, manifest.get("summary", {})),
    }
    if "known_or_possible_differences_in_dgrauet_repo" in manifest:
        out["known_or_possible_differences_in_dgrauet_repo"] = manifest["known_or_possible_differences_in_dgrauet_repo"]
    if "possible_extra_tensors" in manifest:
        extra = manifest["possible_extra_tensors"]
        assert all(key.startswith(prefixes) for key in extra["tensors"]), "extra tensors outside the kept components"
        out["possible_extra_tensors"] = extra
    out["tensors"] = {key: value for key, value in manifest["tensors"].items() if key.startswith(prefixes)}
    transformer = {key: value for key, value in manifest["tensors"].items() if key.startswith(transformer_prefixes)}
    assert all(not BLOCK_KEY.match(key) for key in out["tensors"]), "a block stack outside the transformer listing"
    out["transformer_tensors"], out["repeated_blocks"] = compress_blocks(transformer)
    return out


def extract_gemma(manifest: dict) -> dict:
    """The Gemma listings, both layer stacks compressed; the config.json of the bf16 and the 4-bit repo."""
    out: dict = {name: manifest[name] for name in GEMMA_VERBATIM}
    out["config"] = GEMMA_CONFIG
    out["config_4bit"] = {**GEMMA_CONFIG, "quantization": GEMMA_QUANTIZATION}
    listings = {}
    for name in GEMMA_LISTINGS:
        listings[name], counts = compress_blocks(manifest[name], GEMMA_LAYER_KEY)
        assert out.setdefault("repeated_blocks", counts) == counts, f"{name}: other layer stacks than the bf16 listing"
    text, vision = GEMMA_CONFIG["text_config"], GEMMA_CONFIG["vision_config"]
    assert out["repeated_blocks"] == {
        "language_model.model.layers": text["num_hidden_layers"],
        "vision_tower.vision_model.encoder.layers": vision["num_hidden_layers"],
    }, out["repeated_blocks"]
    return {**out, **listings}


def _rows(tensors: dict, indent: str) -> str:
    return ",\n".join(f"{indent}{json.dumps(key)}: {json.dumps(value)}" for key, value in tensors.items())


def dump(data: dict) -> str:
    """Indented JSON, except one line per tensor (small and diff-friendly)."""
    listings = ("tensors", "transformer_tensors", "tensors_4bit")
    plain = {k: v for k, v in data.items() if k not in (*listings, "possible_extra_tensors")}
    head = json.dumps(plain, indent=1)[:-2]
    if "possible_extra_tensors" in data:
        extra = data["possible_extra_tensors"]
        head += ',\n "possible_extra_tensors": {\n'
        head += f'  "note": {json.dumps(extra["note"])},\n  "tensors": {{\n{_rows(extra["tensors"], "   ")}\n  }}\n }}'
    for name in listings:
        if name in data:
            head += f",\n {json.dumps(name)}: {{\n{_rows(data[name], '  ')}\n }}"
    return head + "\n}\n"


def main(source: Path = DEFAULT_SOURCE) -> None:
    TARGET.mkdir(parents=True, exist_ok=True)
    for name, (layout, version) in MANIFESTS.items():
        manifest = json.loads((source / f"{name}.json").read_text())
        data = extract(manifest, layout, version)
        text = dump(data)
        assert json.loads(text) == data
        (TARGET / f"{name}.json").write_text(text)
        compressed = len(data["transformer_tensors"])
        full = len(expand_blocks(data["transformer_tensors"], data["repeated_blocks"]))
        print(
            f"{name}: {len(data['tensors'])} audio/video tensors, {full} transformer/connector/projection tensors "
            f"({compressed} stored; stacks {data['repeated_blocks']}), {len(text)} bytes"
        )
    data = extract_gemma(json.loads((source / f"{GEMMA_MANIFEST}.json").read_text()))
    text = dump(data)
    assert json.loads(text) == data
    (TARGET / f"{GEMMA_MANIFEST}.json").write_text(text)
    stored = {name: len(data[name]) for name in GEMMA_LISTINGS}
    full = {name: len(expand_blocks(data[name], data["repeated_blocks"], GEMMA_LAYER_KEY)) for name in GEMMA_LISTINGS}
    print(f"{GEMMA_MANIFEST}: {full} tensors ({stored} stored; stacks {data['repeated_blocks']}), {len(text)} bytes")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_SOURCE)
