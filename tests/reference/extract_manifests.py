"""Copy the audio and video-VAE/upscaler part of the real-checkpoint key manifests into the repository.

The manifests in ``shared/reference/manifests`` list every tensor of the real LTX-2 checkpoints (tens of GB that
tests cannot download). `tests/test_manifest_coverage.py` and `tests/test_manifest_coverage_video.py` only need the
audio components (audio VAE, vocoder) and the video components (video VAE decoder/encoder, latent upscalers), so this
script writes ``tests/fixtures/manifests/<manifest>.json`` with:

* ``source``, ``layout`` (official / unified / split) and ``version`` ("2.0" or "2.3");
* ``config``: the config sections these loaders read (``audio_vae``, ``vocoder``, ``vae``): from ``config_used`` for
  the official files, from the companion ``embedded_config.json`` for the split one, ``{}`` for the LTX-2.0 unified
  file (which has no embedded config: our LTX-2.0 defaults apply);
* ``model_info`` (companion ``config.json``) and ``split_manifest`` (companion ``split_model.json``) where present;
* ``summary``: the published/derived counts of those components, where the manifest gives them;
* ``known_or_possible_differences_in_dgrauet_repo`` (split only), verbatim;
* ``possible_extra_tensors`` (official only), verbatim: VAE statistics that real files may carry but nothing reads;
* ``tensors``: ``{key: [shape, dtype]}`` of those components' keys, unchanged: ``audio_vae.``/``vocoder.``/``vae.``
  (official), plus ``vae_decoder.``/``vae_encoder.``/``upsampler.`` (unified), or the ``<file>.safetensors:`` keys of
  the audio, VAE and upscaler files (split).

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

# manifest name -> (layout, LTX version); the Gemma manifest has no audio or video tensors.
MANIFESTS = {
    "ltx-2-19b-official": ("official", "2.0"),
    "ltx-2.3-22b-official": ("official", "2.3"),
    "ltx2-mlx-av-unified": ("unified", "2.0"),
    "ltx-2.3-mlx-q4-split": ("split", "2.3"),
}
CONFIG_SECTIONS = ("audio_vae", "vocoder", "vae")
# Component prefixes of the official and unified files (the transformer, connectors and projection are left out).
COMPONENTS = ("audio_vae", "vocoder", "vae", "vae_decoder", "vae_encoder", "upsampler")
SPLIT_FILES = (
    "audio_vae", "vocoder", "vae_decoder", "vae_encoder", "upsampler",
    "spatial_upscaler_x2_v1_1", "spatial_upscaler_x1_5_v1_0", "temporal_upscaler_x2_v1_0",
)  # fmt: skip
OFFICIAL_SUMMARY = ("audio_vae", "vocoder", "vae_")  # name prefixes in summary.components


def _sections(config: dict) -> dict:
    return {name: config[name] for name in CONFIG_SECTIONS if name in config}


def _summary(layout: str, summary: dict) -> dict:
    if layout == "official":
        components = summary.get("components", {})
        return {name: value for name, value in components.items() if name.startswith(OFFICIAL_SUMMARY)}
    if layout == "split":
        per_file = summary.get("per_file", {})
        names = [f"{name}.safetensors" for name in SPLIT_FILES]
        return {name: per_file[name] for name in names if name in per_file}
    per_prefix = summary.get("keys_per_prefix", {})
    return {"keys_per_prefix": {name: per_prefix[name] for name in COMPONENTS if name in per_prefix}}


def extract(manifest: dict, layout: str, version: str) -> dict:
    companions = manifest.get("companion_files", {})
    if layout == "official":
        config = _sections(manifest["config_used"])
    else:
        config = _sections(companions.get("embedded_config.json", {}))
    if layout == "split":
        prefixes = tuple(f"{name}.safetensors:" for name in SPLIT_FILES)
    else:
        prefixes = tuple(f"{name}." for name in COMPONENTS)
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
    return out


def _rows(tensors: dict, indent: str) -> str:
    return ",\n".join(f"{indent}{json.dumps(key)}: {json.dumps(value)}" for key, value in tensors.items())


def dump(data: dict) -> str:
    """Indented JSON, except one line per tensor (small and diff-friendly)."""
    plain = {k: v for k, v in data.items() if k not in ("tensors", "possible_extra_tensors")}
    head = json.dumps(plain, indent=1)[:-2]
    if "possible_extra_tensors" in data:
        extra = data["possible_extra_tensors"]
        head += ',\n "possible_extra_tensors": {\n'
        head += f'  "note": {json.dumps(extra["note"])},\n  "tensors": {{\n{_rows(extra["tensors"], "   ")}\n  }}\n }}'
    return head + f',\n "tensors": {{\n{_rows(data["tensors"], "  ")}\n }}\n}}\n'


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
