"""Copy the audio part of the real-checkpoint key manifests into the repository.

The manifests in ``shared/reference/manifests`` list every tensor of the real LTX-2 checkpoints (tens of GB that
tests cannot download). `tests/test_manifest_coverage.py` only needs their audio components, so this script writes
``tests/fixtures/manifests/audio/<manifest>.json`` with:

* ``source``, ``layout`` (official / unified / split) and ``version`` ("2.0" or "2.3");
* ``config``: the config sections the audio loaders read (``audio_vae``, ``vocoder``): from ``config_used`` for the
  official files, from the companion ``embedded_config.json`` for the split one, ``{}`` for the LTX-2.0 unified file
  (which has no embedded config);
* ``model_info`` (companion ``config.json``) and ``split_manifest`` (companion ``split_model.json``) where present;
* ``summary``: the published/derived counts of the audio components, where the manifest gives them;
* ``known_or_possible_differences_in_dgrauet_repo`` (split only), verbatim;
* ``tensors``: ``{key: [shape, dtype]}`` of the ``audio_vae``/``vocoder`` keys (``audio_vae.safetensors:`` /
  ``vocoder.safetensors:`` for the split manifest), unchanged.

Run from the repository root (the manifests directory defaults to ``../shared/reference/manifests``):

    .venv/bin/python tests/reference/extract_audio_manifests.py [MANIFEST_DIR]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEFAULT_SOURCE = REPO.parent / "shared" / "reference" / "manifests"
TARGET = REPO / "tests" / "fixtures" / "manifests" / "audio"

# manifest name -> (layout, LTX version); the Gemma manifest has no audio tensors.
MANIFESTS = {
    "ltx-2-19b-official": ("official", "2.0"),
    "ltx-2.3-22b-official": ("official", "2.3"),
    "ltx2-mlx-av-unified": ("unified", "2.0"),
    "ltx-2.3-mlx-q4-split": ("split", "2.3"),
}
AUDIO_SECTIONS = ("audio_vae", "vocoder")
AUDIO_KEY_PREFIXES = ("audio_vae.", "vocoder.")
AUDIO_SPLIT_FILES = ("audio_vae.safetensors:", "vocoder.safetensors:")


def _audio_sections(config: dict) -> dict:
    return {name: config[name] for name in AUDIO_SECTIONS if name in config}


def _audio_summary(layout: str, summary: dict) -> dict:
    if layout == "official":
        components = summary.get("components", {})
        return {name: value for name, value in components.items() if name.startswith(("audio_vae", "vocoder"))}
    if layout == "split":
        per_file = summary.get("per_file", {})
        return {name: per_file[name] for name in ("audio_vae.safetensors", "vocoder.safetensors") if name in per_file}
    per_prefix = summary.get("keys_per_prefix", {})
    return {"keys_per_prefix": {name: per_prefix[name] for name in AUDIO_SECTIONS if name in per_prefix}}


def extract(manifest: dict, layout: str, version: str) -> dict:
    companions = manifest.get("companion_files", {})
    if layout == "official":
        config = _audio_sections(manifest["config_used"])
    else:
        config = _audio_sections(companions.get("embedded_config.json", {}))
    prefixes = AUDIO_SPLIT_FILES if layout == "split" else AUDIO_KEY_PREFIXES
    out: dict = {
        "source": manifest["source"],
        "layout": layout,
        "version": version,
        "config": config,
        "model_info": companions.get("config.json", {}),
        "split_manifest": companions.get("split_model.json", {}),
        "summary": _audio_summary(layout, manifest.get("summary", {})),
    }
    if "known_or_possible_differences_in_dgrauet_repo" in manifest:
        out["known_or_possible_differences_in_dgrauet_repo"] = manifest["known_or_possible_differences_in_dgrauet_repo"]
    out["tensors"] = {key: value for key, value in manifest["tensors"].items() if key.startswith(prefixes)}
    return out


def dump(data: dict) -> str:
    """Indented JSON, except one line per tensor (small and diff-friendly)."""
    tensors = data["tensors"]
    head = json.dumps({k: v for k, v in data.items() if k != "tensors"}, indent=1)
    rows = ",\n".join(f"  {json.dumps(key)}: {json.dumps(value)}" for key, value in tensors.items())
    return head[:-2] + ',\n "tensors": {\n' + rows + "\n }\n}\n"


def main(source: Path = DEFAULT_SOURCE) -> None:
    TARGET.mkdir(parents=True, exist_ok=True)
    for name, (layout, version) in MANIFESTS.items():
        manifest = json.loads((source / f"{name}.json").read_text())
        data = extract(manifest, layout, version)
        text = dump(data)
        assert json.loads(text) == data
        (TARGET / f"{name}.json").write_text(text)
        print(f"{name}: {len(data['tensors'])} tensors, {len(text)} bytes")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_SOURCE)
