"""Build the video VAE and the latent upsamplers from a checkpoint's config and load their weights."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import mlx.core as mx

from ltx_backend.errors import ErrorCode, LtxError
from ltx_backend.models.upsampler import LatentUpsampler, UpsamplerConfig
from ltx_backend.models.video_vae import VideoDecoder, VideoEncoder, VideoVAEConfig
from ltx_backend.models.video_vae import sanitize_decoder_key as _decoder_key
from ltx_backend.models.video_vae import sanitize_encoder_key as _encoder_key
from ltx_backend.weights.checkpoint import Checkpoint, Component, Layout
from ltx_backend.weights.load import build_from_config, load_module
from ltx_backend.weights.safetensors_file import SafetensorsFile

# Where each upscaler lives: split component names (newest first), and official file-name patterns.
UPSCALERS = {
    "spatial_x2": (("spatial_upscaler_x2_v1_1", "spatial_upscaler_x2_v1_0", "upsampler"), "*spatial-upscaler-x2*"),
    "spatial_x1_5": (("spatial_upscaler_x1_5_v1_0",), "*spatial-upscaler-x1.5*"),
    "temporal_x2": (("temporal_upscaler_x2_v1_0",), "*temporal-upscaler-x2*"),
}


def video_vae_config(ckpt: Checkpoint) -> VideoVAEConfig:
    return build_from_config(ckpt, "vae", lambda: VideoVAEConfig.from_config(ckpt.config))


def _vae_component(ckpt: Checkpoint, name: str) -> Component:
    """``vae_decoder`` / ``vae_encoder`` in MLX conversions; the shared ``vae`` in official files."""
    return ckpt.component(name if ckpt.has(name) else "vae")


def prepare_video_decoder(ckpt: Checkpoint) -> tuple[VideoDecoder, Component]:
    decoder = build_from_config(ckpt, "vae", lambda: VideoDecoder(video_vae_config(ckpt)))
    return decoder, _vae_component(ckpt, "vae_decoder")


def prepare_video_encoder(ckpt: Checkpoint) -> tuple[VideoEncoder, Component]:
    encoder = build_from_config(ckpt, "vae", lambda: VideoEncoder(video_vae_config(ckpt)))
    return encoder, _vae_component(ckpt, "vae_encoder")


def load_video_decoder(ckpt: Checkpoint, dtype: mx.Dtype | None = None) -> VideoDecoder:
    decoder, component = prepare_video_decoder(ckpt)
    load_module(decoder, component, _decoder_key, dtype)
    return decoder


def load_video_encoder(ckpt: Checkpoint, dtype: mx.Dtype | None = None) -> VideoEncoder:
    encoder, component = prepare_video_encoder(ckpt)
    load_module(encoder, component, _encoder_key, dtype)
    return encoder


@dataclass
class UpscalerSource:
    component: Component
    config: dict | None  # None: derive it from the weights


def find_upscaler(ckpt: Checkpoint, kind: str) -> UpscalerSource | None:
    """The weights (and config, where the checkpoint has one) of an upscaler, or None if it has none."""
    names, pattern = UPSCALERS[kind]
    if ckpt.layout is Layout.OFFICIAL:
        # Newest first (1.1 before 1.0), but the checkpoint's own family (ltx-2.3-* vs ltx-2-*) before any other.
        family = next((p for p in ("ltx-2.3-", "ltx-2-") if ckpt.files[0].path.name.startswith(p)), None)
        files = sorted(ckpt.root.glob(pattern + ".safetensors"), reverse=True)
        files.sort(key=lambda path: family is None or not path.name.startswith(family))
        if not files:
            return None
        file = SafetensorsFile(files[0])
        raw = file.metadata.get("config")
        return UpscalerSource(Component(kind, dict(file.tensors), {file.path: file}, "torch"), _parse(raw, file.path))
    embedded = ckpt.config.get("upscalers", {})
    for name in names:
        if ckpt.has(name) and (kind == "spatial_x2" or name != "upsampler"):
            return UpscalerSource(ckpt.component(name), embedded.get(name))
    return None


def _parse(raw: str | None, path: Path) -> dict | None:
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise LtxError(ErrorCode.CONFIG_INVALID, f"{path}: bad 'config' metadata ({exc})", "Re-download it.") from exc
    return value if isinstance(value, dict) else None


def load_upsampler(ckpt: Checkpoint, kind: str = "spatial_x2", dtype: mx.Dtype | None = None) -> LatentUpsampler:
    upsampler, component = prepare_upsampler(ckpt, kind)
    load_module(upsampler, component, dtype=dtype)
    return upsampler


def prepare_upsampler(ckpt: Checkpoint, kind: str = "spatial_x2") -> tuple[LatentUpsampler, Component]:
    source = find_upscaler(ckpt, kind)
    if source is None:
        raise LtxError(
            ErrorCode.WEIGHTS_MISSING_KEY,
            f"{ckpt.root} has no {kind.replace('_', ' ')} latent upscaler",
            "Use a checkpoint that ships the upscaler (or put the official upscaler .safetensors file beside it).",
            component=kind,
        )
    shapes = {key: info.shape for key, info in source.component.tensors.items()}

    def build() -> LatentUpsampler:
        config = UpsamplerConfig.from_config(source.config) if source.config else UpsamplerConfig.from_weights(shapes)
        return LatentUpsampler(config)

    return build_from_config(ckpt, f"{kind} upscaler", build), source.component
