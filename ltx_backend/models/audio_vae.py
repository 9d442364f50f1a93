"""LTX-2 audio VAE: latent (B, 8, T, 16) <-> stereo log-mel spectrogram (B, 2, 4T-3, 64).

Follows ltx-core's `ltx_core.model.audio_vae` (decoder, encoder, causal 2D convolutions, pixel norm,
per-channel latent statistics). Public tensors use ltx-core's (batch, channels, time, freq) order;
internally everything is channels-last (batch, time, freq, channels), MLX's convolution layout.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import mlx.core as mx
import mlx.nn as nn

from ltx_backend.models.norms import PixelNorm
from ltx_backend.models.statistics import PREFIX as STATS_PREFIX
from ltx_backend.models.statistics import PerChannelStatistics, statistics_key

LATENT_DOWNSAMPLE_FACTOR = 4  # mel frames per latent frame, fixed by the model family
CAUSALITY_AXES = (None, "none", "height", "width", "width-compatibility")

# The audio VAE section of the official LTX-2.0 / 2.3 checkpoint headers: used when a checkpoint
# carries no audio_vae config at all (mlx-video-with-audio's LTX-2.0 unified conversion).
LTX2_AUDIO_VAE_SECTION = {
    "model": {
        "params": {
            "ddconfig": {
                "double_z": True, "mel_bins": 64, "z_channels": 8, "resolution": 256, "in_channels": 2,
                "out_ch": 2, "ch": 128, "ch_mult": [1, 2, 4], "num_res_blocks": 2, "attn_resolutions": [],
                "dropout": 0.0, "mid_block_add_attention": False, "norm_type": "pixel", "causality_axis": "height",
            },
            "sampling_rate": 16000,
        }
    },
    "preprocessing": {
        "stft": {"filter_length": 1024, "hop_length": 160, "causal": True}, "mel": {"n_mel_channels": 64},
    },
}  # fmt: skip


@dataclass(frozen=True)
class AudioVAEConfig:
    """The ``ddconfig`` of the audio VAE, with ltx-core's defaults for keys a section leaves out."""

    ch: int = 128
    out_ch: int = 2
    in_channels: int = 2
    ch_mult: tuple[int, ...] = (1, 2, 4)
    num_res_blocks: int = 2
    attn_resolutions: frozenset[int] = field(default_factory=lambda: frozenset({8, 16, 32}))
    resolution: int = 256
    z_channels: int = 8
    double_z: bool = True
    norm_type: str = "pixel"
    causality_axis: str | None = "height"
    mid_block_add_attention: bool = True
    mel_bins: int | None = None
    sample_rate: int = 16000
    mel_hop_length: int = 160
    n_fft: int = 1024  # the STFT size of the encoder's log-mel input (preprocessing.stft.filter_length)

    @classmethod
    def from_config(cls, config: dict) -> AudioVAEConfig:
        """From a checkpoint's config sections (the LTX-2.0 header values when it has no audio_vae section)."""
        section = config.get("audio_vae") or LTX2_AUDIO_VAE_SECTION
        params = section.get("model", {}).get("params", {})
        dd = params.get("ddconfig", {})
        preprocessing = section.get("preprocessing", {})
        mel_bins = (
            dd.get("mel_bins")
            or preprocessing.get("mel", {}).get("n_mel_channels")
            or section.get("variables", {}).get("mel_bins")
        )
        axis = dd.get("causality_axis", "height")
        if axis not in CAUSALITY_AXES:
            raise ValueError(f"audio_vae causality_axis {axis!r} is not one of {CAUSALITY_AXES}")
        if dd.get("norm_type", "pixel") not in ("pixel", "group"):
            raise ValueError(f"audio_vae norm_type {dd.get('norm_type')!r} is not 'pixel' or 'group'")
        return cls(
            ch=dd.get("ch", 128),
            out_ch=dd.get("out_ch", 2),
            in_channels=dd.get("in_channels", 2),
            ch_mult=tuple(dd.get("ch_mult", (1, 2, 4))),
            num_res_blocks=dd.get("num_res_blocks", 2),
            attn_resolutions=frozenset(dd.get("attn_resolutions", {8, 16, 32})),
            resolution=dd.get("resolution", 256),
            z_channels=dd.get("z_channels", 8),
            double_z=dd.get("double_z", True),
            norm_type=dd.get("norm_type", "pixel"),
            causality_axis=None if axis == "none" else axis,
            mid_block_add_attention=dd.get("mid_block_add_attention", True),
            mel_bins=mel_bins,
            sample_rate=params.get("sampling_rate", 16000),
            mel_hop_length=preprocessing.get("stft", {}).get("hop_length", 160),
            n_fft=preprocessing.get("stft", {}).get("filter_length", 1024),
        )


def make_norm(channels: int, norm_type: str) -> nn.Module:
    if norm_type == "group":
        return nn.GroupNorm(32, channels, eps=1e-6, affine=True, pytorch_compatible=True)
    return PixelNorm(eps=1e-6)


class CausalConv2d(nn.Module):
    """Conv2d that pads only the past side of the causal axis (time is axis 1, frequency axis 2)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, causality_axis: str | None) -> None:
        super().__init__()
        pad = kernel_size - 1
        centred = (pad // 2, pad - pad // 2)
        if causality_axis == "height":
            self.padding = [(0, 0), (pad, 0), centred, (0, 0)]
        elif causality_axis in ("width", "width-compatibility"):
            self.padding = [(0, 0), centred, (pad, 0), (0, 0)]
        else:
            self.padding = [(0, 0), centred, centred, (0, 0)]
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size)

    def __call__(self, x: mx.array) -> mx.array:
        return self.conv(mx.pad(x, self.padding))


class ResnetBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, norm_type: str, causality_axis: str | None) -> None:
        super().__init__()
        self.norm1 = make_norm(in_channels, norm_type)
        self.conv1 = CausalConv2d(in_channels, out_channels, 3, causality_axis)
        self.norm2 = make_norm(out_channels, norm_type)
        self.conv2 = CausalConv2d(out_channels, out_channels, 3, causality_axis)
        if in_channels != out_channels:
            self.nin_shortcut = CausalConv2d(in_channels, out_channels, 1, causality_axis)

    def __call__(self, x: mx.array) -> mx.array:
        h = self.conv1(nn.silu(self.norm1(x)))
        h = self.conv2(nn.silu(self.norm2(h)))
        if "nin_shortcut" in self:
            x = self.nin_shortcut(x)
        return x + h


class AttnBlock(nn.Module):
    """Single-head self-attention over all (time, freq) positions, with 1x1 convolution projections."""

    def __init__(self, channels: int, norm_type: str) -> None:
        super().__init__()
        self.norm = make_norm(channels, norm_type)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def __call__(self, x: mx.array) -> mx.array:
        b, t, f, c = x.shape
        h = self.norm(x)
        q, k, v = (proj(h).reshape(b, 1, t * f, c) for proj in (self.q, self.k, self.v))
        out = mx.fast.scaled_dot_product_attention(q, k, v, scale=c**-0.5)
        return x + self.proj_out(out.reshape(b, t, f, c))


class Upsample(nn.Module):
    """Nearest x2 on time and frequency, causal conv, then drop the first step of the causal axis."""

    def __init__(self, channels: int, causality_axis: str | None) -> None:
        super().__init__()
        self.causality_axis = causality_axis
        self.conv = CausalConv2d(channels, channels, 3, causality_axis)

    def __call__(self, x: mx.array) -> mx.array:
        x = mx.repeat(mx.repeat(x, 2, axis=1), 2, axis=2)
        x = self.conv(x)
        # The first two outputs see only the first input step: dropping one keeps length 1 + 2n.
        if self.causality_axis == "height":
            return x[:, 1:]
        if self.causality_axis == "width":
            return x[:, :, 1:]
        return x


class Downsample(nn.Module):
    """Stride-2 convolution with the causal padding of ltx-core's encoder."""

    def __init__(self, channels: int, causality_axis: str | None) -> None:
        super().__init__()
        # (time before, time after), (freq before, freq after)
        pads = {"height": ((2, 0), (0, 1)), "width": ((0, 1), (2, 0)), "width-compatibility": ((0, 1), (1, 0))}
        time_pad, freq_pad = pads.get(causality_axis, ((0, 1), (0, 1)))
        self.padding = [(0, 0), time_pad, freq_pad, (0, 0)]
        self.conv = nn.Conv2d(channels, channels, 3, stride=2)

    def __call__(self, x: mx.array) -> mx.array:
        return self.conv(mx.pad(x, self.padding))


class Stage(nn.Module):
    """One resolution level: residual blocks (each optionally followed by attention) and a resampler."""

    def __init__(self, blocks: list[ResnetBlock], attn: list[AttnBlock]) -> None:
        super().__init__()
        self.block = blocks
        self.attn = attn

    def __call__(self, x: mx.array) -> mx.array:
        for i, block in enumerate(self.block):
            x = block(x)
            if self.attn:
                x = self.attn[i](x)
        return x


class MidBlock(nn.Module):
    def __init__(self, channels: int, config: AudioVAEConfig) -> None:
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels, config.norm_type, config.causality_axis)
        if config.mid_block_add_attention:
            self.attn_1 = AttnBlock(channels, config.norm_type)
        self.block_2 = ResnetBlock(channels, channels, config.norm_type, config.causality_axis)

    def __call__(self, x: mx.array) -> mx.array:
        x = self.block_1(x)
        if "attn_1" in self:
            x = self.attn_1(x)
        return self.block_2(x)


def _patchify(latent: mx.array) -> mx.array:
    """(B, C, T, F) -> (B, T, C*F), channel-major features as ltx-core's AudioPatchifier."""
    b, c, t, f = latent.shape
    return latent.transpose(0, 2, 1, 3).reshape(b, t, c * f)


def _unpatchify(tokens: mx.array, channels: int) -> mx.array:
    b, t, features = tokens.shape
    return tokens.reshape(b, t, channels, features // channels).transpose(0, 2, 1, 3)


class AudioDecoder(nn.Module):
    """Latent (B, z, T, F') -> log-mel (B, out_ch, 4T-3, mel_bins), as ltx-core's ``AudioDecoder``."""

    def __init__(self, config: AudioVAEConfig) -> None:
        super().__init__()
        self.config = config
        axis, norm = config.causality_axis, config.norm_type
        block_in = config.ch * config.ch_mult[-1]
        self.per_channel_statistics = PerChannelStatistics(config.ch)
        self.conv_in = CausalConv2d(config.z_channels, block_in, 3, axis)
        self.mid = MidBlock(block_in, config)

        levels = len(config.ch_mult)
        resolution = config.resolution // 2 ** (levels - 1)
        up: list[Stage | None] = [None] * levels
        for level in reversed(range(levels)):
            block_out = config.ch * config.ch_mult[level]
            blocks, attn = [], []
            for _ in range(config.num_res_blocks + 1):
                blocks.append(ResnetBlock(block_in, block_out, norm, axis))
                block_in = block_out
                if resolution in config.attn_resolutions:
                    attn.append(AttnBlock(block_in, norm))
            stage = Stage(blocks, attn)
            if level != 0:
                stage.upsample = Upsample(block_in, axis)
                resolution *= 2
            up[level] = stage
        self.up = up
        self.norm_out = make_norm(block_in, norm)
        self.conv_out = CausalConv2d(block_in, config.out_ch, 3, axis)

    def __call__(self, latent: mx.array) -> mx.array:
        _b, _, frames, latent_bins = latent.shape
        tokens = self.per_channel_statistics.un_normalize(_patchify(latent))
        x = _unpatchify(tokens, latent.shape[1]).transpose(0, 2, 3, 1)  # -> (B, T, F, C)

        x = self.mid(self.conv_in(x))
        for level in reversed(range(len(self.up))):
            stage = self.up[level]
            x = stage(x)
            if "upsample" in stage:
                x = stage.upsample(x)
        x = self.conv_out(nn.silu(self.norm_out(x)))

        target_frames = frames * LATENT_DOWNSAMPLE_FACTOR
        if self.config.causality_axis is not None:
            target_frames = max(target_frames - (LATENT_DOWNSAMPLE_FACTOR - 1), 1)
        target_bins = self.config.mel_bins or latent_bins
        return _fit(x.transpose(0, 3, 1, 2), target_frames, target_bins)


def _fit(mel: mx.array, frames: int, bins: int) -> mx.array:
    """Crop, then zero-pad, (B, C, T, F) to exactly `frames` x `bins`."""
    mel = mel[:, :, :frames, :bins]
    pad_t, pad_f = frames - mel.shape[2], bins - mel.shape[3]
    if pad_t > 0 or pad_f > 0:
        mel = mx.pad(mel, [(0, 0), (0, 0), (0, max(pad_t, 0)), (0, max(pad_f, 0))])
    return mel


class AudioEncoder(nn.Module):
    """Log-mel (B, in_channels, T, F) -> normalized latent means (B, z, T', F'), as ltx-core's ``AudioEncoder``."""

    def __init__(self, config: AudioVAEConfig) -> None:
        super().__init__()
        self.config = config
        axis, norm = config.causality_axis, config.norm_type
        self.per_channel_statistics = PerChannelStatistics(config.ch)
        self.conv_in = CausalConv2d(config.in_channels, config.ch, 3, axis)

        levels = len(config.ch_mult)
        in_mult = (1, *config.ch_mult)
        resolution = config.resolution
        down = []
        block_in = config.ch
        for level in range(levels):
            block_in = config.ch * in_mult[level]
            block_out = config.ch * config.ch_mult[level]
            blocks, attn = [], []
            for _ in range(config.num_res_blocks):
                blocks.append(ResnetBlock(block_in, block_out, norm, axis))
                block_in = block_out
                if resolution in config.attn_resolutions:
                    attn.append(AttnBlock(block_in, norm))
            stage = Stage(blocks, attn)
            if level != levels - 1:
                stage.downsample = Downsample(block_in, axis)
                resolution //= 2
            down.append(stage)
        self.down = down
        self.mid = MidBlock(block_in, config)
        self.norm_out = make_norm(block_in, norm)
        out = 2 * config.z_channels if config.double_z else config.z_channels
        self.conv_out = CausalConv2d(block_in, out, 3, axis)

    def __call__(self, mel: mx.array) -> mx.array:
        x = self.conv_in(mel.transpose(0, 2, 3, 1))
        for stage in self.down:
            x = stage(x)
            if "downsample" in stage:
                x = stage.downsample(x)
        x = self.conv_out(nn.silu(self.norm_out(self.mid(x))))
        means = x[..., : self.config.z_channels].transpose(0, 3, 1, 2)  # first half: the posterior means
        tokens = self.per_channel_statistics.normalize(_patchify(means))
        return _unpatchify(tokens, self.config.z_channels)


def sanitize_decoder_key(key: str) -> str | None:
    """Audio-VAE component key -> decoder parameter key; None for encoder keys stored beside it."""
    if key.startswith(STATS_PREFIX):
        return statistics_key(key)
    if key.startswith("encoder."):
        return None
    return key.removeprefix("decoder.")


def sanitize_encoder_key(key: str) -> str | None:
    """Audio-VAE component key -> encoder parameter key; None for decoder keys (with or without ``decoder.``)."""
    if key.startswith(STATS_PREFIX):
        return statistics_key(key)
    return key.removeprefix("encoder.") if key.startswith("encoder.") else None
