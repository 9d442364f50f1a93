"""Waveform -> audio latent: ltx-core's ``AudioProcessor`` (resample, log-mel) and the audio VAE encoder.

``AudioProcessor`` is torchaudio's ``functional.resample`` (Hann-windowed sinc, lowpass width 6, rolloff 0.99) to
the encoder's rate, then ``transforms.MelSpectrogram`` (periodic Hann window of ``n_fft``, centred frames with
reflect padding, magnitude (power 1), Slaney mel scale and Slaney area normalisation, f_min 0, f_max rate / 2),
then ``log(clamp(mel, 1e-5))`` as (batch, channels, frames, mel bins). Written here in NumPy from torchaudio's
formulas (the host-side work is small: 16 kHz, one FFT per 10 ms hop).
"""

from __future__ import annotations

import math

import mlx.core as mx
import numpy as np

from ltx_backend.models.audio_vae import AudioEncoder

LOWPASS_FILTER_WIDTH = 6
ROLLOFF = 0.99
LOG_FLOOR = 1e-5


def resample(wave: np.ndarray, orig_rate: int, new_rate: int) -> np.ndarray:
    """torchaudio ``functional.resample`` (sinc_interp_hann) of (..., samples) float32 audio."""
    if orig_rate == new_rate:
        return wave
    gcd = math.gcd(orig_rate, new_rate)
    orig, new = orig_rate // gcd, new_rate // gcd
    kernel, width = _sinc_kernel(orig, new)
    shape = wave.shape
    flat = wave.reshape(-1, shape[-1]).astype(np.float32)
    length = flat.shape[-1]
    padded = np.pad(flat, [(0, 0), (width, width + orig)])
    taps = kernel.shape[-1]
    frames = (padded.shape[-1] - taps) // orig + 1
    windows = np.lib.stride_tricks.sliding_window_view(padded, taps, axis=-1)[:, ::orig][:, :frames]
    out = (windows @ kernel.T).reshape(flat.shape[0], -1)  # (n, frames, new) -> interleaved phases
    target = math.ceil(new * length / orig)
    return out[:, :target].reshape(*shape[:-1], -1).astype(np.float32)


def _sinc_kernel(orig: int, new: int) -> tuple[np.ndarray, int]:
    """(new, taps) float32 polyphase kernel and the zero padding width, computed in float32 as torchaudio does."""
    base = min(orig, new) * ROLLOFF
    width = math.ceil(LOWPASS_FILTER_WIDTH * orig / base)
    f32 = np.float32
    idx = np.arange(-width, width + orig, dtype=f32)[None] / f32(orig)
    t = np.arange(0, -new, -1, dtype=f32)[:, None] / f32(new) + idx
    t = np.clip(t * f32(base), -LOWPASS_FILTER_WIDTH, LOWPASS_FILTER_WIDTH).astype(f32)
    window = np.cos(t * f32(math.pi / LOWPASS_FILTER_WIDTH / 2)) ** 2
    t = t * f32(math.pi)
    with np.errstate(divide="ignore", invalid="ignore"):
        kernel = np.where(t == 0, f32(1.0), np.sin(t) / t)
    return (kernel * (window * f32(base / orig))).astype(f32), width


def _hz_to_mel(freq: float) -> float:
    """Slaney: linear below 1 kHz (200/3 Hz per mel), logarithmic above."""
    if freq >= 1000.0:
        return 15.0 + math.log(freq / 1000.0) / (math.log(6.4) / 27.0)
    return freq / (200.0 / 3)


def _mel_to_hz(mels: np.ndarray) -> np.ndarray:
    logstep = np.float32(math.log(6.4) / 27.0)
    linear = np.float32(200.0 / 3) * mels
    return np.where(mels >= 15.0, np.float32(1000.0) * np.exp(logstep * (mels - np.float32(15.0))), linear)


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int) -> np.ndarray:
    """torchaudio ``melscale_fbanks(n_fft // 2 + 1, 0, rate / 2, n_mels, rate, "slaney", "slaney")``: (freqs, mels)."""
    freqs = np.linspace(0, sample_rate // 2, n_fft // 2 + 1, dtype=np.float32)
    mel_points = np.linspace(_hz_to_mel(0.0), _hz_to_mel(sample_rate / 2.0), n_mels + 2, dtype=np.float32)
    hz_points = _mel_to_hz(mel_points).astype(np.float32)
    diff = hz_points[1:] - hz_points[:-1]
    slopes = hz_points[None, :] - freqs[:, None]
    down = -slopes[:, :-2] / diff[:-1]
    up = slopes[:, 2:] / diff[1:]
    bank = np.maximum(0.0, np.minimum(down, up))
    return (bank * (2.0 / (hz_points[2:] - hz_points[:n_mels]))[None]).astype(np.float32)


def log_mel(wave: np.ndarray, sample_rate: int, n_fft: int, hop: int, n_mels: int) -> np.ndarray:
    """(B, C, samples) at `sample_rate` -> (B, C, frames, n_mels) log-magnitude mel, as ``AudioProcessor``."""
    pad = n_fft // 2
    padded = np.pad(wave.astype(np.float32), [(0, 0)] * (wave.ndim - 1) + [(pad, pad)], mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft, axis=-1)[..., ::hop, :]
    window = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)).astype(np.float32)  # periodic Hann
    magnitude = np.abs(np.fft.rfft(frames * window, axis=-1)).astype(np.float32)  # (B, C, frames, freqs)
    mel = magnitude @ mel_filterbank(sample_rate, n_fft, n_mels)
    return np.log(np.maximum(mel, LOG_FLOOR)).astype(np.float32)


def waveform_to_mel(wave: np.ndarray, sample_rate: int, encoder: AudioEncoder) -> np.ndarray:
    """(C, samples) or (B, C, samples) -> the encoder's (B, C, frames, mel bins) input at its own rate."""
    config = encoder.config
    wave = wave[None] if wave.ndim == 2 else wave
    wave = resample(wave, sample_rate, config.sample_rate)
    return log_mel(wave, config.sample_rate, config.n_fft, config.mel_hop_length, config.mel_bins)


def encode_audio(wave: np.ndarray, sample_rate: int, encoder: AudioEncoder) -> mx.array:
    """ltx-core ``encode_audio``: waveform -> normalized audio latent (B, 8, T, 16), in the encoder's dtype."""
    mel = waveform_to_mel(wave, sample_rate, encoder)
    dtype = encoder.conv_in.conv.weight.dtype
    return encoder(mx.array(mel).astype(dtype))


def fit_latent_frames(latent: mx.array, frames: int) -> mx.array:
    """Crop, or zero-pad at the end, an audio latent (B, C, T, M) to `frames` (the retake pipeline's trim/pad)."""
    if latent.shape[2] >= frames:
        return latent[:, :, :frames]
    pad = mx.zeros((*latent.shape[:2], frames - latent.shape[2], latent.shape[3]), dtype=latent.dtype)
    return mx.concatenate([latent, pad], axis=2)
