"""Audio latents -> stereo waveform: audio VAE decoder, then the vocoder (with bandwidth extension)."""

from __future__ import annotations

import mlx.core as mx
import numpy as np

from ltx_backend.models.audio_vae import AudioDecoder
from ltx_backend.models.bwe import VocoderWithBWE
from ltx_backend.models.vocoder import Vocoder


def decode_audio(latent: mx.array, decoder: AudioDecoder, vocoder: Vocoder | VocoderWithBWE) -> tuple[np.ndarray, int]:
    """Latent (B=1, 8, T, 16) -> (waveform (2, samples) float32, sample rate), as ltx-core's ``decode_audio``."""
    if latent.ndim != 4 or latent.shape[0] != 1:
        raise ValueError(f"expected one audio latent (1, C, T, F), got {tuple(latent.shape)}")
    dtype = decoder.conv_in.conv.weight.dtype
    mel = decoder(latent.astype(dtype))
    wave = vocoder(mel.astype(vocoder_dtype(vocoder)))[0].astype(mx.float32)
    mx.eval(wave)
    return np.array(wave), vocoder.output_sampling_rate


def vocoder_dtype(vocoder: Vocoder | VocoderWithBWE) -> mx.Dtype:
    inner = vocoder.vocoder if isinstance(vocoder, VocoderWithBWE) else vocoder
    return inner.conv_pre.weight.dtype


def fit_to_duration(wave: np.ndarray, sample_rate: int, seconds: float) -> np.ndarray:
    """Trim or pad (with silence) a (channels, samples) waveform to the video's length.

    The audio latent covers ``4T - 3`` mel frames, a few milliseconds short of (or past) ``num_frames / fps``;
    the muxer must never shorten the video to the audio, so the soundtrack is made exactly as long.
    """
    samples = round(seconds * sample_rate)
    if wave.shape[-1] >= samples:
        return wave[..., :samples]
    return np.pad(wave, [(0, 0)] * (wave.ndim - 1) + [(0, samples - wave.shape[-1])])
