"""Copy the audio, video and transformer/text-connector part of the real-checkpoint key manifests into the repository.

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

Run from the repository root (the manifests directory defaults to ``../shared/reference/manifests``):

    .venv/bin/python tests/reference/extract_manifests.py [MANIFEST_DIR]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEFAULT_SOURCE = REPO.parent / "shared" / "reference" / "manifests"
TARGET = REPO / "tests" / "fixtures" / "manifests"
sys.path.insert(0, str(REPO / "tests"))
from manifest_checkpoint import BLOCK_KEY, KEPT_BLOCKS, expand_blocks  # noqa: E402

# manifest name -> (layout, LTX version); the Gemma manifest has no audio, video or transformer tensors.
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


def compress_blocks(tensors: dict) -> tuple[dict, dict[str, int]]:
    """Keep blocks 0 and 1 of every block stack (and every other key); check the dropped blocks repeat block 0."""
    stacks: dict[str, dict[int, dict[str, list]]] = {}
    for key, value in tensors.items():
        match = BLOCK_KEY.match(key)
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
        match = BLOCK_KEY.match(key)
        if match is None or int(match["index"]) < KEPT_BLOCKS:
            kept[key] = value
    assert expand_blocks(kept, counts) == tensors, "compression is not exact"
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


def _rows(tensors: dict, indent: str) -> str:
    return ",\n".join(f"{indent}{json.dumps(key)}: {json.dumps(value)}" for key, value in tensors.items())


def dump(data: dict) -> str:
    """Indented JSON, except one line per tensor (small and diff-friendly)."""
    listings = ("tensors", "transformer_tensors", "possible_extra_tensors")
    plain = {k: v for k, v in data.items() if k not in listings}
    head = json.dumps(plain, indent=1)[:-2]
    if "possible_extra_tensors" in data:
        extra = data["possible_extra_tensors"]
        head += ',\n "possible_extra_tensors": {\n'
        head += f'  "note": {json.dumps(extra["note"])},\n  "tensors": {{\n{_rows(extra["tensors"], "   ")}\n  }}\n }}'
    head += f',\n "tensors": {{\n{_rows(data["tensors"], "  ")}\n }}'
    return head + f',\n "transformer_tensors": {{\n{_rows(data["transformer_tensors"], "  ")}\n }}\n}}\n'


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


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_SOURCE)
