"""Bandwidth extension (LTX-2.3): 16 kHz vocoder output -> 48 kHz waveform, as ltx-core's ``VocoderWithBWE``.

The base vocoder's waveform is turned back into a causal log-mel spectrogram (STFT bases and mel
filterbank are checkpoint buffers), a second BigVGAN generator predicts the high band from it, and the
result is added to the base waveform upsampled by the Hann-windowed sinc resampler (the skip path).
"""

from __future__ import annotations

from dataclasses import dataclass

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten, tree_map_with_path

from ltx_backend.models.resample import hann_sinc_filter, upsample
from ltx_backend.models.vocoder import Vocoder, VocoderConfig


@dataclass(frozen=True)
class BWEConfig:
    vocoder: VocoderConfig
    generator: VocoderConfig
    input_sampling_rate: int
    output_sampling_rate: int
    hop_length: int
    n_fft: int
    num_mels: int

    @classmethod
    def from_section(cls, section: dict) -> BWEConfig:
        """From a ``{"vocoder": {...}, "bwe": {...}}`` vocoder section, with ltx-core's checks."""
        vocoder_cfg, bwe_cfg = section.get("vocoder", {}), section["bwe"]
        for name, cfg in (("vocoder", vocoder_cfg), ("bwe", bwe_cfg)):
            if cfg.get("resblock") != "AMP1" or cfg.get("activation") != "snakebeta":
                raise ValueError(f"vocoder.{name} must be a BigVGAN (resblock AMP1, activation snakebeta) generator")
        try:
            rates = (int(bwe_cfg["input_sampling_rate"]), int(bwe_cfg["output_sampling_rate"]))
            hop, n_fft, num_mels = int(bwe_cfg["hop_length"]), int(bwe_cfg["n_fft"]), int(bwe_cfg["num_mels"])
        except KeyError as exc:
            raise ValueError(f"vocoder.bwe lacks {exc.args[0]!r}") from exc
        if rates[1] % rates[0]:
            raise ValueError(f"BWE output rate {rates[1]} is not a multiple of its input rate {rates[0]}")
        return cls(
            vocoder=VocoderConfig.from_section(vocoder_cfg, output_sampling_rate=rates[0]),
            generator=VocoderConfig.from_section(bwe_cfg, apply_final_activation=False, output_sampling_rate=rates[1]),
            input_sampling_rate=rates[0],
            output_sampling_rate=rates[1],
            hop_length=hop,
            n_fft=n_fft,
            num_mels=num_mels,
        )


class STFT(nn.Module):
    """Causal STFT as a matrix product with stored DFT x window bases (real rows, then imaginary rows)."""

    def __init__(self, n_fft: int, hop_length: int) -> None:
        super().__init__()
        self.n_fft = n_fft
        self.hop_length = hop_length
        bins = n_fft // 2 + 1
        self.forward_basis = mx.zeros((2 * bins, 1, n_fft))
        self.inverse_basis = mx.zeros((2 * bins, 1, n_fft))  # stored in checkpoints, unused for analysis

    def magnitude(self, y: mx.array) -> mx.array:
        """(N, L) waveform -> (N, frames, n_fft // 2 + 1) magnitude, left-padded so no frame looks ahead."""
        y = mx.pad(y, [(0, 0), (max(0, self.n_fft - self.hop_length), 0)])
        n, length = y.shape
        frames = (length - self.n_fft) // self.hop_length + 1
        windows = mx.as_strided(y, (n, frames, self.n_fft), (length, self.hop_length, 1))
        spec = windows @ self.forward_basis.reshape(-1, self.n_fft).astype(y.dtype).T
        bins = spec.shape[-1] // 2
        return mx.sqrt(mx.square(spec[..., :bins]) + mx.square(spec[..., bins:]))


class MelSTFT(nn.Module):
    def __init__(self, n_fft: int, hop_length: int, num_mels: int) -> None:
        super().__init__()
        self.stft_fn = STFT(n_fft, hop_length)
        self.mel_basis = mx.zeros((num_mels, n_fft // 2 + 1))

    def __call__(self, y: mx.array) -> mx.array:
        """(N, L) waveform -> (N, frames, num_mels) log-mel."""
        mel = self.stft_fn.magnitude(y) @ self.mel_basis.astype(y.dtype).T
        return mx.log(mx.maximum(mel, 1e-5))


class VocoderWithBWE(nn.Module):
    def __init__(self, config: BWEConfig) -> None:
        super().__init__()
        self.config = config
        self.vocoder = Vocoder(config.vocoder)
        self.bwe_generator = Vocoder(config.generator)
        self.mel_stft = MelSTFT(config.n_fft, config.hop_length, config.num_mels)
        self.ratio = config.output_sampling_rate // config.input_sampling_rate
        taps, width = hann_sinc_filter(self.ratio)
        # Not a checkpoint tensor: computed here (leading underscore keeps it out of the parameters).
        self._skip_taps = mx.array(taps)
        self._skip_pad = width

    @property
    def output_sampling_rate(self) -> int:
        return self.config.output_sampling_rate

    def resample(self, x: mx.array) -> mx.array:
        """The skip path: (B, L, C) -> (B, L * ratio, C), torchaudio-equivalent sinc interpolation."""
        ratio, width = self.ratio, self._skip_pad
        kernel = self._skip_taps.shape[0]
        return upsample(x, self._skip_taps, ratio, width, 2 * width * ratio, kernel - ratio)

    def waveform(self, mel: mx.array) -> mx.array:
        """(B, 2, T, mel_bins) -> channels-last 48 kHz waveform (B, samples, 2)."""
        x = self.vocoder.waveform(mel)
        b, length, channels = x.shape
        output_length = length * self.config.output_sampling_rate // self.config.input_sampling_rate
        hop = self.config.hop_length
        if length % hop:
            x = mx.pad(x, [(0, 0), (0, hop - length % hop), (0, 0)])
        # The generator reads one log-mel per stereo channel: (B, C, frames, mels), the vocoder input layout.
        mel_high = self.mel_stft(x.transpose(0, 2, 1).reshape(b * channels, -1))
        residual = self.bwe_generator.waveform(mel_high.reshape(b, channels, *mel_high.shape[1:]))
        return mx.clip(residual + self.resample(x), -1, 1)[:, :output_length]

    def __call__(self, mel: mx.array) -> mx.array:
        """(B, 2, T, mel_bins) -> (B, 2, samples), as ltx-core; computed in float32, returned in the mel's dtype.

        ltx-core 1.2.0 runs ``VocoderWithBWE`` in float32 whatever the model dtype (its comments: bf16 degrades the
        spectral metrics by 40-90%), casting the module to float32 for the call where autocast is unavailable.
        So do we: float32 copies of the weights for this call only (they are freed with the result's graph).

        Only the convolution weights (~180 arrays) are copied here. The other ~1050 (biases, Snake's alpha and beta,
        the resampling filters, the STFT and mel bases) are widened where they meet float32 activations: in an add,
        which widens exactly, or by a cast first inside the op (fused into its kernel). The same numbers, without
        ~1050 one-array cast kernels a call."""
        loaded = self.parameters()
        if all(w.dtype == mx.float32 for _, w in tree_flatten(loaded)):
            return self.waveform(mel.astype(mx.float32)).transpose(0, 2, 1).astype(mel.dtype)
        self.update(tree_map_with_path(lambda path, w: w.astype(mx.float32) if path.endswith(".weight") else w, loaded))
        try:
            wave = self.waveform(mel.astype(mx.float32))
        finally:
            self.update(loaded)
        return wave.transpose(0, 2, 1).astype(mel.dtype)


def sanitize_bwe_key(key: str) -> str | None:
    """Vocoder component key -> ``VocoderWithBWE`` key.

    Official checkpoints say ``vocoder.conv_pre``; MLX conversions drop the inner ``vocoder.``.
    """
    if key.startswith("resampler."):
        return None  # a derived buffer some exporters save; we compute it
    if key.startswith(("vocoder.", "bwe_generator.", "mel_stft.")):
        return key
    return "vocoder." + key
