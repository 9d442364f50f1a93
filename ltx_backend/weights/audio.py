"""Build the audio modules from a checkpoint's config and load their weights."""

from __future__ import annotations

import mlx.core as mx

from ltx_backend.models.audio_vae import (
    AudioDecoder,
    AudioEncoder,
    AudioVAEConfig,
    sanitize_decoder_key,
    sanitize_encoder_key,
)
from ltx_backend.models.bwe import BWEConfig, VocoderWithBWE, sanitize_bwe_key
from ltx_backend.models.vocoder import LTX2_VOCODER_SECTION, Vocoder, VocoderConfig
from ltx_backend.weights.checkpoint import Checkpoint, Component
from ltx_backend.weights.load import build_from_config, load_module


def audio_vae_config(ckpt: Checkpoint) -> AudioVAEConfig:
    return build_from_config(ckpt, "audio_vae", lambda: AudioVAEConfig.from_config(ckpt.config))


def build_vocoder(ckpt: Checkpoint) -> Vocoder | VocoderWithBWE:
    """The vocoder the checkpoint describes: plain HiFi-GAN/BigVGAN, or BigVGAN with bandwidth extension."""
    section = ckpt.section("vocoder") or LTX2_VOCODER_SECTION

    def build() -> Vocoder | VocoderWithBWE:
        if "bwe" in section:
            return VocoderWithBWE(BWEConfig.from_section(section))
        return Vocoder(VocoderConfig.from_section(section))

    return build_from_config(ckpt, "vocoder", build)


def prepare_audio_decoder(ckpt: Checkpoint) -> tuple[AudioDecoder, Component]:
    decoder = build_from_config(ckpt, "audio_vae", lambda: AudioDecoder(audio_vae_config(ckpt)))
    return decoder, ckpt.component("audio_vae")


def load_audio_decoder(ckpt: Checkpoint, dtype: mx.Dtype | None = None) -> AudioDecoder:
    decoder, component = prepare_audio_decoder(ckpt)
    load_module(decoder, component, sanitize_decoder_key, dtype)
    return decoder


def load_audio_encoder(ckpt: Checkpoint, dtype: mx.Dtype | None = None) -> AudioEncoder:
    encoder = build_from_config(ckpt, "audio_vae", lambda: AudioEncoder(audio_vae_config(ckpt)))
    load_module(encoder, ckpt.component("audio_vae"), sanitize_encoder_key, dtype)
    return encoder


def vocoder_sanitizer(vocoder: Vocoder | VocoderWithBWE):
    return sanitize_bwe_key if isinstance(vocoder, VocoderWithBWE) else (lambda key: key)


def load_vocoder(ckpt: Checkpoint, dtype: mx.Dtype | None = None) -> Vocoder | VocoderWithBWE:
    vocoder = build_vocoder(ckpt)
    load_module(vocoder, ckpt.component("vocoder"), vocoder_sanitizer(vocoder), dtype)
    return vocoder
