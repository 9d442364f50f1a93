"""Build the audio modules from a checkpoint's config and load their weights."""

from __future__ import annotations

import mlx.core as mx

from ltx_backend.errors import ErrorCode, LtxError
from ltx_backend.models.audio_vae import (
    AudioDecoder,
    AudioEncoder,
    AudioVAEConfig,
    sanitize_decoder_key,
    sanitize_encoder_key,
)
from ltx_backend.models.bwe import BWEConfig, VocoderWithBWE, sanitize_bwe_key
from ltx_backend.models.vocoder import LTX2_VOCODER_SECTION, Vocoder, VocoderConfig
from ltx_backend.weights.checkpoint import Checkpoint
from ltx_backend.weights.load import load_module


def _config_error(ckpt: Checkpoint, section: str, exc: Exception) -> LtxError:
    return LtxError(
        ErrorCode.CONFIG_INVALID,
        f"{ckpt.root}: the {section} config is not usable: {exc}",
        "The checkpoint's config (embedded_config.json or the safetensors metadata) is damaged or from an "
        "unsupported model; re-download it.",
        section=section,
    )


def audio_vae_config(ckpt: Checkpoint) -> AudioVAEConfig:
    try:
        return AudioVAEConfig.from_config(ckpt.config)
    except (ValueError, TypeError, AttributeError) as exc:
        raise _config_error(ckpt, "audio_vae", exc) from exc


def build_vocoder(ckpt: Checkpoint) -> Vocoder | VocoderWithBWE:
    """The vocoder the checkpoint describes: plain HiFi-GAN/BigVGAN, or BigVGAN with bandwidth extension."""
    section = ckpt.section("vocoder") or LTX2_VOCODER_SECTION
    try:
        if "bwe" in section:
            return VocoderWithBWE(BWEConfig.from_section(section))
        return Vocoder(VocoderConfig.from_section(section))
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise _config_error(ckpt, "vocoder", exc) from exc


def load_audio_decoder(ckpt: Checkpoint, dtype: mx.Dtype | None = None) -> AudioDecoder:
    decoder = AudioDecoder(audio_vae_config(ckpt))
    load_module(decoder, ckpt.component("audio_vae"), sanitize_decoder_key, dtype)
    return decoder


def load_audio_encoder(ckpt: Checkpoint, dtype: mx.Dtype | None = None) -> AudioEncoder:
    encoder = AudioEncoder(audio_vae_config(ckpt))
    load_module(encoder, ckpt.component("audio_vae"), sanitize_encoder_key, dtype)
    return encoder


def vocoder_sanitizer(vocoder: Vocoder | VocoderWithBWE):
    return sanitize_bwe_key if isinstance(vocoder, VocoderWithBWE) else (lambda key: key)


def load_vocoder(ckpt: Checkpoint, dtype: mx.Dtype | None = None) -> Vocoder | VocoderWithBWE:
    vocoder = build_vocoder(ckpt)
    load_module(vocoder, ckpt.component("vocoder"), vocoder_sanitizer(vocoder), dtype)
    return vocoder
