"""LTX-2.5 checkpoints: the model version, which text encoder a checkpoint needs, and its text processor.

ltx-core 1.2.0 reads ``model_version`` ("2.5.0") from the transformer file's metadata (it picks the ancestral
stage-1 sampler and the image CRF from it) and pairs the text encoder by ``gemma_source_checkpoint.gemma_version``
(transformer metadata) == ``gemma_config.gemma_version`` (text-encoder metadata); a checkpoint of version >= 2.4
without ``gemma_source_checkpoint`` is rejected, older ones need a Gemma 3 encoder (``_check_gemma_version``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import mlx.core as mx

from ltx_backend.errors import ErrorCode, LtxError
from ltx_backend.models.duration_head import DurationHead, DurationHeadConfig
from ltx_backend.models.text_connector import TextEmbeddingsProcessor, sanitize_processor_key
from ltx_backend.weights.checkpoint import Checkpoint, Component
from ltx_backend.weights.diffusers_ltx2 import fuse_duration_head
from ltx_backend.weights.gemma4 import Gemma4Source
from ltx_backend.weights.load import build_from_config, load_module
from ltx_backend.weights.safetensors_file import SafetensorsFile
from ltx_backend.weights.transformer import text_processor_config

LTX25 = (2, 5)
GEMMA_SOURCE_REQUIRED = (2, 4)  # ltx-core: from 2.4 on the checkpoint must name its Gemma (and images use CRF 18)
GEMMA3, GEMMA4 = "gemma3", "gemma4"


def parse_version(text: object) -> tuple[int, ...] | None:
    """ "2.5.0" -> (2, 5, 0); None for anything that is not a dotted version."""
    if not isinstance(text, str) or not re.fullmatch(r"\d+(\.\d+)*", text.strip()):
        return None
    return tuple(int(part) for part in text.strip().split("."))


def _metadata(ckpt: Checkpoint) -> dict:
    merged: dict = {}
    for file in ckpt.files:
        merged.update(getattr(file, "metadata", {}) or {})
    return merged


def model_version(ckpt: Checkpoint) -> tuple[int, ...] | None:
    """The checkpoint's ``model_version``: safetensors metadata (official files) or config.json (conversions)."""
    return parse_version(_metadata(ckpt).get("model_version", ckpt.model_info.get("model_version")))


def is_ltx25(ckpt: Checkpoint) -> bool:
    version = model_version(ckpt)
    return version is not None and version[:2] >= LTX25


def uses_ancestral_stage_1(ckpt: Checkpoint) -> bool:
    """ltx-pipelines ``should_use_ancestral_sampler``: the distilled stage 1 is Euler-ancestral (eta 1) from model
    version 2.5 on, read from the transformer file's metadata."""
    return is_ltx25(ckpt)


LTX24_IMAGE_CRF, DEFAULT_IMAGE_CRF = 18, 33


def default_image_crf(vae: Checkpoint) -> int:
    """ltx-pipelines ``detect_params(vae_path).default_image_crf``: conditioning images are re-encoded at CRF 18 for
    checkpoints of version 2.4 and later, 33 before; read from the video-VAE file's ``model_version``."""
    version = model_version(vae)
    return LTX24_IMAGE_CRF if version is not None and version[:2] >= GEMMA_SOURCE_REQUIRED else DEFAULT_IMAGE_CRF


def gemma_source_version(ckpt: Checkpoint) -> str | None:
    """``gemma_source_checkpoint.gemma_version`` of the transformer metadata (e.g. ``gemma4-12b-ltx-v1``)."""
    raw = _metadata(ckpt).get("gemma_source_checkpoint", ckpt.model_info.get("gemma_source_checkpoint"))
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError:
            return None
    return raw.get("gemma_version") if isinstance(raw, dict) else None


def text_encoder_family(path: str | Path) -> tuple[str, str | None]:
    """(``gemma3`` | ``gemma4``, the encoder's ``gemma_version`` or None) from its config, reading no weights."""
    path = Path(path).expanduser()
    raw: object = None
    try:
        if path.is_file():
            text = SafetensorsFile(path).metadata.get("gemma_config")
            raw = json.loads(text) if text else None
        elif (path / "config.json").is_file():
            raw = json.loads((path / "config.json").read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        raw = None
    if not isinstance(raw, dict):
        raise LtxError(
            ErrorCode.TEXT_ENCODER_INVALID,
            f"text encoder at {path}: no Gemma config (config.json or 'gemma_config' metadata)",
            "Pass a Gemma text-encoder folder or the LTX-2.5 text-encoder file.",
            path=str(path),
        )
    text_config = raw.get("text_config") if isinstance(raw.get("text_config"), dict) else {}
    model_type = str(raw.get("model_type") or text_config.get("model_type") or "")
    family = GEMMA4 if model_type.startswith("gemma4") else GEMMA3 if model_type.startswith("gemma3") else model_type
    return family, raw.get("gemma_version")


def check_text_encoder(ckpt: Checkpoint, family: str, encoder_gemma_version: str | None, encoder_path: str) -> None:
    """Raise TEXT_ENCODER_MISMATCH unless the encoder belongs to the checkpoint (ltx-core's pairing rule)."""
    version = model_version(ckpt)
    label = ".".join(map(str, version)) if version else "unknown"
    source = gemma_source_version(ckpt)

    def mismatch(what: str, hint: str) -> LtxError:
        return LtxError(
            ErrorCode.TEXT_ENCODER_MISMATCH,
            f"{ckpt.root} (LTX {label}) cannot use the text encoder {encoder_path}: {what}",
            hint,
            model_version=label,
            text_encoder=encoder_path,
        )

    if source is not None:
        if source.startswith(GEMMA4) and family != GEMMA4:
            raise mismatch(
                f"the model needs its Gemma 4 encoder ({source}), this is {family or 'not a Gemma model'}",
                "Use the LTX-2.5 text encoder (text_encoders/gemma4-12b-with-proj-ltx-2.5-bf16.safetensors).",
            )
        if family == GEMMA4 and source != encoder_gemma_version:
            raise mismatch(
                f"the model was trained with {source!r}, the encoder is {encoder_gemma_version!r}",
                "Use the text encoder released with this model.",
            )
        return
    if version is not None and version[:2] >= GEMMA_SOURCE_REQUIRED:
        raise LtxError(
            ErrorCode.CONFIG_INVALID,
            f"{ckpt.root}: LTX {label} names no gemma_source_checkpoint in its metadata",
            "The checkpoint's metadata is incomplete; re-download it.",
        )
    if family != GEMMA3:
        raise mismatch(
            f"LTX-2/2.3 models use Gemma 3, this is {family or 'not a Gemma model'}",
            "Use mlx-community/gemma-3-12b-it-bf16 (or its 4-bit version); Gemma 4 is for LTX-2.5.",
        )


def text_processor_component(ckpt: Checkpoint, encoder: Gemma4Source) -> Component:
    """The connectors (transformer file) and the text projection (text-encoder file) as one component, keyed as
    the processor's sanitizer expects (official names)."""
    projection = encoder.projection()
    if projection is None:
        raise LtxError(
            ErrorCode.WEIGHTS_MISSING_KEY,
            f"{encoder.path} has no text_embedding_projection.* tensors",
            "LTX-2.5 keeps the text projection in its text-encoder file; use that file.",
        )
    connectors = ckpt.component("transformer")
    tensors = dict(connectors.tensors)
    tensors.update({"text_embedding_projection." + key: info for key, info in projection.tensors.items()})
    return Component("connector", tensors, {**connectors.files, **projection.files}, "torch")


def build_text_processor_ltx25(ckpt: Checkpoint, encoder: Gemma4Source) -> TextEmbeddingsProcessor:
    """Feature extractor + connectors for this checkpoint and encoder (config from the transformer's metadata)."""
    c = encoder.config
    config = text_processor_config(ckpt, c.hidden_size, c.num_hidden_layers + 1)
    return build_from_config(ckpt, "transformer", lambda: TextEmbeddingsProcessor(config))


def load_text_processor_ltx25(
    ckpt: Checkpoint, encoder: Gemma4Source, dtype: mx.Dtype | None = None
) -> TextEmbeddingsProcessor:
    """The text processor of an LTX-2.5 checkpoint, loaded exactly: connectors from the transformer file, the text
    projection (``text_embedding_projection.*``) from the text-encoder file."""
    processor = build_text_processor_ltx25(ckpt, encoder)
    load_module(processor, text_processor_component(ckpt, encoder), sanitize_processor_key, dtype)
    return processor


DURATION_HEAD_PREFIX = "duration_head."


def sanitize_duration_key(key: str) -> str | None:
    return key[len(DURATION_HEAD_PREFIX) :] if key.startswith(DURATION_HEAD_PREFIX) else None


def load_duration_head(
    path: str | Path, transformer_config: dict | None = None, dtype: mx.Dtype | None = None
) -> DurationHead:
    """The DurationHead of ``model_patches/ltx-2.5-duration-head-*.safetensors`` (``duration_head.*`` keys, fused
    pooler). Its dims come from the file's ``config`` metadata, else from the transformer's config sections."""
    path = Path(path).expanduser()
    file = SafetensorsFile(path)
    try:
        config = json.loads(file.metadata["config"]) if "config" in file.metadata else {}
    except json.JSONDecodeError as exc:
        raise LtxError(
            ErrorCode.CONFIG_INVALID, f"{path}: the 'config' metadata is not JSON ({exc})", "Re-download it."
        ) from exc
    if not isinstance(config.get("transformer"), dict) and transformer_config is not None:
        config = {**config, "transformer": transformer_config.get("transformer", transformer_config)}
    head = DurationHead(DurationHeadConfig.from_config(config))
    component = Component("duration_head", dict(file.tensors), {file.path: file}, "torch")
    load_module(head, component, sanitize_duration_key, dtype)
    return head


def load_duration_head_diffusers(folder: str | Path, dtype: mx.Dtype | None = None) -> DurationHead:
    """The DurationHead of a Diffusers repo's ``duration_head/`` folder (``LTX2DurationHead``: split q/k/v, dims in
    its config.json), fused into the official layout."""
    folder = Path(folder).expanduser()
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise LtxError(ErrorCode.WEIGHTS_MISSING_KEY, f"{folder} holds no .safetensors weights", "Re-download it.")
    config_path = folder / "config.json"
    raw = json.loads(config_path.read_text()) if config_path.is_file() else {}
    config = DurationHeadConfig(
        video_dim=int(raw.get("video_cross_attention_dim", 4096)),
        audio_dim=int(raw.get("audio_cross_attention_dim", 2048)),
        pooler_hidden_dim=int(raw.get("pooler_hidden_dim", 256)),
        num_queries=int(raw.get("num_queries", 1)),
        num_pooler_heads=int(raw.get("num_pooler_heads", 4)),
        mlp_hidden=int(raw.get("mlp_hidden_dim", 256)),
    )
    head = DurationHead(config)
    stored: dict[str, mx.array] = {}
    for path in files:
        stored.update(mx.load(str(path)))
    fused = fuse_duration_head(stored)
    weights = [(sanitize_duration_key(key), value.astype(dtype) if dtype else value) for key, value in fused.items()]
    try:
        head.load_weights(weights, strict=True)
    except ValueError as exc:
        raise LtxError(
            ErrorCode.WEIGHTS_SHAPE_MISMATCH,
            f"{folder}: the duration head does not match its config ({exc})",
            "The duration_head folder is damaged or from another model; re-download it.",
        ) from exc
    return head


def unsupported_parts(ckpt: Checkpoint) -> list[str]:
    """What a checkpoint ships that this backend does not run, one line each (shown by ``inspect``)."""
    from ltx_backend.weights.checkpoint import official_tree_vae_files

    if not (ckpt.root / "vae").is_dir() or not (ckpt.root / "diffusion_models").is_dir():
        return []
    _, _, diffusion = official_tree_vae_files(ckpt.root)
    return [
        f"vae/{path.name}: the diffusion decoder (DiffVAE) is out of scope; videos are decoded by the conv VAE"
        for path in diffusion
    ]
