"""Open an LTX-2 checkpoint directory: detect its on-disk layout, read its configs, list its components.

Three layouts are understood:

* ``unified`` — mlx-video-with-audio's single ``model.safetensors`` with component prefixes
  (``transformer.``, ``vae_decoder.``, ``audio_vae.``, ``vocoder.``, ...), MLX tensor layouts, a flat
  ``config.json`` and, for LTX-2.3, ``embedded_config.json`` with the original config sections.
* ``split`` — one ``<component>.safetensors`` per component, listed by ``split_model.json`` (dgrauet /
  mlx-forge and ``mlx_video.convert``), possibly with 4-bit/8-bit quantized transformer layers.
* ``official`` — Lightricks' own single file (``ltx-2-19b-distilled.safetensors`` ...): PyTorch names and
  layouts, config sections in the safetensors metadata. LTX-2.5 releases the same names as a folder tree, one file
  per part (``diffusion_models/`` transformer + connectors, ``vae/`` conv video VAE and audio VAE + vocoder,
  ``text_encoders/``, ``latent_upscale_models/``, ``model_patches/``): opened as one official checkpoint whose
  files are the transformer, the conv VAE and the audio file, their config sections merged.

Nothing here reads tensor data: a component is a mapping from its keys to `TensorInfo`, and the bytes
are read lazily when a module is loaded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Protocol

import mlx.core as mx

from ltx_backend.errors import ErrorCode, LtxError
from ltx_backend.weights.plan import Convention
from ltx_backend.weights.safetensors_file import SafetensorsFile, TensorInfo


class Layout(str, Enum):
    UNIFIED = "unified"
    SPLIT = "split"
    OFFICIAL = "official"
    DIFFUSERS = "diffusers"  # one folder per component, diffusers' key names (weights/diffusers_ltx2.py)


class TensorFile(Protocol):
    """What a checkpoint needs of a file: its tensor listing and, for real files, the data."""

    path: Path
    tensors: dict[str, TensorInfo]

    def array(self, name: str, stream: mx.Stream | None = None) -> mx.array: ...


# Unified-file prefixes and the component each one belongs to.
UNIFIED_PREFIXES = {
    "transformer.": "transformer",
    "connector.": "connector",
    "text_embedding_projection.": "text_embedding_projection",
    "vae_decoder.": "vae_decoder",
    "vae_encoder.": "vae_encoder",
    "audio_vae.": "audio_vae",
    "vocoder.": "vocoder",
    "upsampler.": "upsampler",
}
# Official-file prefixes. Inside a component the PyTorch sub-prefixes stay (e.g. ``decoder.``).
OFFICIAL_PREFIXES = {
    "model.diffusion_model.": "transformer",
    "text_embedding_projection.": "text_embedding_projection",
    "vae.": "vae",
    "audio_vae.": "audio_vae",
    "vocoder.": "vocoder",
}
# Components whose tensors are stored in PyTorch layout even inside MLX checkpoints.
TORCH_LAYOUT_COMPONENTS = {"upsampler", "spatial_upscaler_x2_v1_0", "spatial_upscaler_x2_v1_1",
                           "spatial_upscaler_x1_5_v1_0", "temporal_upscaler_x2_v1_0"}  # fmt: skip
OFFICIAL_FILE_EXCLUDES = ("upscaler", "upsampler", "lora", "fp8", "fp4")
OFFICIAL_TREE = "diffusion_models"  # the folder that marks Lightricks' split release (LTX-2.5)
CONV_VAE_CLASS = "CausalVideoAutoencoder"  # ltx-core: any other vae._class_name is the diffusion decoder (DiffVAE)


@dataclass
class Component:
    """The tensors of one component, keyed without the component prefix."""

    name: str
    tensors: dict[str, TensorInfo]
    files: dict[Path, TensorFile]
    convention: Convention  # the layout to assume where a tensor's shape cannot tell

    def read(self, info: TensorInfo, stream: mx.Stream | None = None) -> mx.array:
        """The tensor as a lazy array; on `stream` (a parallel load's lane) when given, else the default stream."""
        file = self.files[info.file]
        return file.array(info.name) if stream is None else file.array(info.name, stream)

    @property
    def quantized_paths(self) -> set[str]:
        """Module paths stored quantized (a ``.scales`` tensor beside the packed weight)."""
        return {key[: -len(".scales")] for key in self.tensors if key.endswith(".scales")}


@dataclass
class Checkpoint:
    root: Path
    layout: Layout
    files: list[TensorFile]
    config: dict = field(default_factory=dict)  # ltx-core config sections: transformer, vae, audio_vae, vocoder...
    model_info: dict = field(default_factory=dict)  # config.json of MLX conversions
    split_manifest: dict = field(default_factory=dict)
    _components: dict[str, Component] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._components = _group_components(self)

    @property
    def components(self) -> list[str]:
        return sorted(self._components)

    def has(self, name: str) -> bool:
        return name in self._components

    def component(self, name: str) -> Component:
        if name not in self._components:
            raise LtxError(
                ErrorCode.WEIGHTS_MISSING_KEY,
                f"{self.root} has no {name!r} weights (it has: {', '.join(self.components) or 'nothing'})",
                "The checkpoint is incomplete or is not an LTX-2 audio-video model; re-download it.",
                component=name,
            )
        return self._components[name]

    def section(self, name: str) -> dict:
        """A config section (``audio_vae``, ``vocoder``, ...) or ``{}`` when the checkpoint has none."""
        value = self.config.get(name)
        if value is not None and not isinstance(value, dict):
            raise LtxError(
                ErrorCode.CONFIG_INVALID,
                f"{self.root}: the {name!r} config section is a {type(value).__name__}, not an object",
                "The checkpoint's config is damaged; re-download it.",
                section=name,
            )
        return value or {}

    @property
    def quantization(self) -> dict | None:
        """``{"bits": b, "group_size": g}`` for quantized split checkpoints, else None."""
        if self.split_manifest.get("quantized"):
            return {
                "bits": int(self.split_manifest.get("quantization_bits", 4)),
                "group_size": int(self.split_manifest.get("quantization_group_size", 64)),
            }
        q = self.model_info.get("quantization")
        if not isinstance(q, dict) or not isinstance(q.get("bits"), int) or not isinstance(q.get("group_size"), int):
            return None  # e.g. only per-layer entries (mixed precision): the tensor shapes say each layer's bits
        return {"bits": q["bits"], "group_size": q["group_size"]}


def _group_components(ckpt: Checkpoint) -> dict[str, Component]:
    if ckpt.layout is Layout.SPLIT:
        components = {}
        for file in ckpt.files:
            name = file.path.stem
            prefix = name + "."
            # Later mlx-forge versions name the denoiser by its variant: transformer-distilled / transformer-dev.
            name = "transformer" if name.startswith("transformer-") else name
            keys = list(file.tensors)
            # mlx-forge writes the component prefix inside each file; strip it only if every key has it.
            strip = bool(keys) and all(key.startswith(prefix) for key in keys)
            tensors = {(key[len(prefix) :] if strip else key): info for key, info in file.tensors.items()}
            convention: Convention = "torch" if name in TORCH_LAYOUT_COMPONENTS else "mlx"
            components[name] = Component(name, tensors, {file.path: file}, convention)
        return components

    prefixes = UNIFIED_PREFIXES if ckpt.layout is Layout.UNIFIED else OFFICIAL_PREFIXES
    grouped: dict[str, dict[str, TensorInfo]] = {}
    owners: dict[str, dict[Path, TensorFile]] = {}
    for file in ckpt.files:
        for key, info in file.tensors.items():
            for prefix, name in prefixes.items():
                if key.startswith(prefix):
                    grouped.setdefault(name, {})[key[len(prefix) :]] = info
                    owners.setdefault(name, {})[file.path] = file
                    break
            else:
                grouped.setdefault("unknown", {})[key] = info
                owners.setdefault("unknown", {})[file.path] = file
    components = {}
    for name, tensors in grouped.items():
        torch_layout = ckpt.layout is Layout.OFFICIAL or name in TORCH_LAYOUT_COMPONENTS
        components[name] = Component(name, tensors, owners[name], "torch" if torch_layout else "mlx")
    return components


def _read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LtxError(
            ErrorCode.CONFIG_INVALID,
            f"{path} is not readable JSON: {exc}",
            "Re-download the model; the config file is damaged.",
            file=str(path),
        ) from exc
    if not isinstance(value, dict):
        raise LtxError(ErrorCode.CONFIG_INVALID, f"{path} is not a JSON object", "Re-download the model.")
    return value


def _optional_json(path: Path) -> dict:
    return _read_json(path) if path.is_file() else {}


def _official_config(file: SafetensorsFile) -> dict | None:
    raw = file.metadata.get("config")
    if raw is None:
        return None
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise LtxError(
            ErrorCode.CONFIG_INVALID,
            f"{file.path}: the 'config' metadata is not valid JSON ({exc})",
            "Re-download the checkpoint.",
        ) from exc
    return config if isinstance(config, dict) else None


def open_checkpoint(path: str | Path) -> Checkpoint:
    """Open a checkpoint directory (or an official single ``.safetensors`` file) and detect its layout. A split
    transformer file (no VAE section: not a full single-file checkpoint) in a release tree's ``diffusion_models/``
    opens that tree with this transformer: how the dev transformer is chosen when the distilled one lies beside it."""
    root = Path(path).expanduser()
    if root.is_file():
        sections = (_official_config(SafetensorsFile(root)) or {}) if root.parent.name == OFFICIAL_TREE else {}
        if "transformer" in sections and "vae" not in sections:
            return _open_official_tree(root.parent.parent, root)
        return _open_official(root.parent, [root])
    if not root.is_dir():
        raise LtxError(
            ErrorCode.MODEL_NOT_FOUND,
            f"No model at {root}",
            "Pass a local checkpoint directory, a .safetensors file or a Hugging Face repo id.",
        )

    if (root / OFFICIAL_TREE).is_dir():
        return _open_official_tree(root)

    split_json = root / "split_model.json"
    if split_json.is_file():
        manifest = _read_json(split_json)
        if manifest.get("format") != "split":
            raise LtxError(
                ErrorCode.LAYOUT_UNKNOWN,
                f"{split_json} has format {manifest.get('format')!r}, expected 'split'",
                "This split layout is not supported; convert the model with mlx-video-with-audio or mlx-forge.",
            )
        names = manifest.get("components") or [p.stem for p in sorted(root.glob("*.safetensors"))]
        return _open_split(root, [_split_file_name(root, name) for name in names], manifest)

    if (root / "model.safetensors").is_file():
        return Checkpoint(
            root=root,
            layout=Layout.UNIFIED,
            files=[SafetensorsFile(root / "model.safetensors")],
            config=_optional_json(root / "embedded_config.json"),
            model_info=_optional_json(root / "config.json"),
        )

    if (root / "transformer.safetensors").is_file() and (root / "config.json").is_file():
        return _open_split(root, [p.stem for p in sorted(root.glob("*.safetensors"))], {"format": "split"})

    candidates = [
        p for p in sorted(root.glob("*.safetensors")) if not any(word in p.name for word in OFFICIAL_FILE_EXCLUDES)
    ]
    if candidates:
        return _open_official(root, candidates)
    found = ", ".join(sorted(p.name for p in root.iterdir())[:20]) or "an empty directory"
    raise LtxError(
        ErrorCode.LAYOUT_UNKNOWN,
        f"{root} is not an LTX-2 checkpoint (found: {found})",
        "Expected model.safetensors (unified MLX), split_model.json with per-component files, or an official "
        "ltx-2*.safetensors file.",
    )


def _split_file_name(root: Path, component: str) -> str:
    """The file stem of a listed component: ``transformer`` may be stored as ``transformer-<variant>``."""
    if component == "transformer" and not (root / "transformer.safetensors").is_file():
        variants = sorted(root.glob("transformer-*.safetensors"))
        if len(variants) == 1:
            return variants[0].stem
    return component


def _repair_hint(path: Path) -> str | None:
    from ltx_backend.tiny import repair_hint  # the tiny models are rewritten, not downloaded

    return repair_hint(path)


def _open_split(root: Path, names: list[str], manifest: dict) -> Checkpoint:
    files = []
    for name in names:
        path = root / f"{name}.safetensors"
        if not path.is_file():
            raise LtxError(
                ErrorCode.WEIGHTS_MISSING_KEY,
                f"{root}/split_model.json lists {name!r} but {path.name} is missing",
                _repair_hint(path) or "The download is incomplete; download the model again.",
                file=str(path),
            )
        files.append(SafetensorsFile(path))
    return Checkpoint(
        root=root,
        layout=Layout.SPLIT,
        files=files,
        config=_optional_json(root / "embedded_config.json"),
        model_info=_optional_json(root / "config.json"),
        split_manifest=manifest,
    )


def _open_official(root: Path, candidates: list[Path]) -> Checkpoint:
    opened = [(SafetensorsFile(path), path) for path in candidates]
    with_config = [(file, _official_config(file)) for file, _ in opened]
    usable = [(file, config) for file, config in with_config if config]
    if not usable:
        names = ", ".join(path.name for _, path in opened)
        raise LtxError(
            ErrorCode.LAYOUT_UNKNOWN,
            f"{root}: {names} carry no LTX-2 config in their metadata",
            "Expected an official Lightricks checkpoint (ltx-2-19b-*.safetensors) or an MLX conversion.",
        )
    if len(usable) > 1:
        preferred = [item for item in usable if "distilled" in item[0].path.name] or usable
        if len(preferred) > 1:
            names = ", ".join(file.path.name for file, _ in preferred)
            raise LtxError(
                ErrorCode.LAYOUT_UNKNOWN,
                f"{root} holds several checkpoints ({names})",
                "Pass the path of the .safetensors file to use.",
            )
        usable = preferred
    file, config = usable[0]
    return Checkpoint(root=root, layout=Layout.OFFICIAL, files=[file], config=config)


def _vae_class(file: SafetensorsFile) -> str | None:
    section = (_official_config(file) or {}).get("vae")
    return section.get("_class_name") if isinstance(section, dict) else None


def official_tree_vae_files(root: Path) -> tuple[list[Path], list[Path], list[Path]]:
    """``vae/`` of an official tree: (conv video VAE files, audio files, diffusion-decoder files). The kind is the
    file's ``config`` metadata (``vae._class_name``; audio files carry ``audio_vae``), as ltx-core decides it."""
    conv, audio, diffusion = [], [], []
    for path in sorted((root / "vae").glob("*.safetensors")):
        file = SafetensorsFile(path)
        config = _official_config(file) or {}
        if "audio_vae" in config or "vocoder" in config:
            audio.append(path)
        elif _vae_class(file) in (None, CONV_VAE_CLASS):
            conv.append(path)
        else:
            diffusion.append(path)
    return conv, audio, diffusion


def _open_official_tree(root: Path, transformer: Path | None = None) -> Checkpoint:
    transformers = [transformer] if transformer else sorted((root / OFFICIAL_TREE).glob("*.safetensors"))
    if not transformers:
        raise LtxError(
            ErrorCode.WEIGHTS_MISSING_KEY,
            f"{root / OFFICIAL_TREE} holds no transformer .safetensors file",
            "The download is incomplete; download the model again.",
        )
    preferred = [p for p in transformers if "distilled" in p.name] or transformers
    if len(preferred) > 1:
        raise LtxError(
            ErrorCode.LAYOUT_UNKNOWN,
            f"{root / OFFICIAL_TREE} holds several transformers ({', '.join(p.name for p in preferred)})",
            "Pass the path of the transformer .safetensors file to use.",
        )
    conv, audio, _ = official_tree_vae_files(root)
    files = [SafetensorsFile(path) for path in [preferred[0], *conv[:1], *audio[:1]]]
    config: dict = {}
    for file in files:  # each file carries its own sections (transformer, vae, audio_vae + vocoder)
        for name, section in (_official_config(file) or {}).items():
            config.setdefault(name, section)
    if "transformer" not in config:
        raise LtxError(
            ErrorCode.LAYOUT_UNKNOWN,
            f"{files[0].path} carries no LTX config in its metadata",
            "Expected Lightricks' transformer file (diffusion_models/ltx-2.5-*-transformer-*.safetensors).",
        )
    return Checkpoint(root=root, layout=Layout.OFFICIAL, files=files, config=config)
