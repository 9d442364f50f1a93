"""LTX-2 vocoders: stereo log-mel (B, 2, T, 64) -> waveform (B, 2, samples).

Two kinds, chosen by the checkpoint config exactly as ltx-core's ``Vocoder`` does:

* resblock ``"1"`` — HiFi-GAN (LTX-2.0, 24 kHz): LeakyReLU, ``ResBlock1``, tanh at the end.
* resblock ``"AMP1"`` — BigVGAN v2 (LTX-2.3, 16 kHz before bandwidth extension): ``AMPBlock1`` with
  anti-aliased Snake/SnakeBeta activations (x2 Kaiser-sinc upsample, activation, x2 low-pass downsample).

Internally signals are channels-last (batch, samples, channels).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from ltx_backend.device import cuda_gpu
from ltx_backend.models import snake_kernel
from ltx_backend.models.resample import edge_masks, kaiser_sinc_filter, lowpass_of_upsampled, lowpass_reads

LRELU_SLOPE = 0.1
MEL_CHANNELS = 128  # conv_pre input: 2 stereo channels x 64 mel bins, in every production checkpoint

# The vocoder section of the official LTX-2.0 header, used when a checkpoint carries none.
LTX2_VOCODER_SECTION = {
    "resblock": "1", "stereo": True, "upsample_initial_channel": 1024, "upsample_rates": [6, 5, 2, 2, 2],
    "upsample_kernel_sizes": [16, 15, 8, 4, 4], "resblock_kernel_sizes": [3, 7, 11],
    "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5], [1, 3, 5]], "output_sampling_rate": 24000,
}  # fmt: skip


@dataclass(frozen=True)
class VocoderConfig:
    resblock_kernel_sizes: tuple[int, ...] = (3, 7, 11)
    upsample_rates: tuple[int, ...] = (6, 5, 2, 2, 2)
    upsample_kernel_sizes: tuple[int, ...] = (16, 15, 8, 4, 4)
    resblock_dilation_sizes: tuple[tuple[int, ...], ...] = ((1, 3, 5), (1, 3, 5), (1, 3, 5))
    upsample_initial_channel: int = 1024
    resblock: str = "1"
    output_sampling_rate: int = 24000
    activation: str = "snake"
    use_tanh_at_final: bool = True
    apply_final_activation: bool = True
    use_bias_at_final: bool = True

    @classmethod
    def from_section(
        cls, cfg: dict, apply_final_activation: bool = True, output_sampling_rate: int | None = None
    ) -> VocoderConfig:
        """From a flat vocoder config dict, with ltx-core's defaults (``_vocoder_from_config``)."""
        if cfg.get("resblock", "1") not in ("1", "AMP1"):
            raise ValueError(f"vocoder resblock {cfg.get('resblock')!r} is not supported (expected '1' or 'AMP1')")
        if cfg.get("stereo", True) is not True:
            raise ValueError("only stereo vocoders exist in LTX-2 checkpoints (config says stereo: false)")
        return cls(
            resblock_kernel_sizes=tuple(cfg.get("resblock_kernel_sizes", (3, 7, 11))),
            upsample_rates=tuple(cfg.get("upsample_rates", (6, 5, 2, 2, 2))),
            upsample_kernel_sizes=tuple(cfg.get("upsample_kernel_sizes", (16, 15, 8, 4, 4))),
            resblock_dilation_sizes=tuple(
                tuple(d) for d in cfg.get("resblock_dilation_sizes", ((1, 3, 5), (1, 3, 5), (1, 3, 5)))
            ),
            upsample_initial_channel=cfg.get("upsample_initial_channel", 1024),
            resblock=cfg.get("resblock", "1"),
            output_sampling_rate=output_sampling_rate or cfg.get("output_sampling_rate", 24000),
            activation=cfg.get("activation", "snake"),
            use_tanh_at_final=cfg.get("use_tanh_at_final", True),
            apply_final_activation=apply_final_activation,
            use_bias_at_final=cfg.get("use_bias_at_final", True),
        )

    @property
    def upsample_factor(self) -> int:
        factor = 1
        for rate in self.upsample_rates:
            factor *= rate
        return factor


def _same_padding(kernel_size: int, dilation: int) -> int:
    return (kernel_size * dilation - dilation) // 2


def _on_cpu() -> bool:
    return mx.default_device() == mx.cpu


class DilatedConv1d(nn.Conv1d):
    """A stride-1 ``Conv1d`` whose dilation MLX's CPU backend would run through its naive loop (~100x slower than
    its GEMM path, measured on the LTX-2.3 vocoder): on the CPU only, a dilation-d convolution is computed as one
    undilated convolution over the input's d interleaved phases stacked in the batch. GPUs dilate natively."""

    def __call__(self, x: mx.array) -> mx.array:
        d = self.dilation
        if d == 1 or self.stride != 1 or not _on_cpu():
            return super().__call__(x)
        b, length, channels = x.shape
        taps = self.weight.shape[1]
        padded = length + 2 * self.padding
        out_length = padded - d * (taps - 1)
        steps = -(-padded // d)
        x = mx.pad(x, [(0, 0), (self.padding, self.padding + steps * d - padded), (0, 0)])
        x = x.reshape(b, steps, d, channels).transpose(0, 2, 1, 3).reshape(b * d, steps, channels)
        y = mx.conv1d(x, self.weight)  # output m of phase r is output d * m + r of the dilated convolution
        y = y.reshape(b, d, -1, y.shape[-1]).transpose(0, 2, 1, 3).reshape(b, -1, y.shape[-1])[:, :out_length]
        return y + self.bias if "bias" in self else y


def _subpixel_taps(kernel: int, stride: int, padding: int) -> tuple[np.ndarray, int, int]:
    """Which tap of a transposed convolution output phase ``p`` applies to input ``t + shift`` for output
    ``stride * t + p``: a (stride, shifts) table of tap indices (``kernel`` where none), and the input shifts' range."""
    reads = {}
    for phase in range(stride):
        first, offset = (phase + padding) % stride, (phase + padding) // stride
        for j in range(-(-(kernel - first) // stride)):
            reads[phase, offset - j] = first + stride * j
    lo, hi = min(shift for _, shift in reads), max(shift for _, shift in reads)
    table = np.full((stride, hi - lo + 1), kernel, dtype=np.int32)
    for (phase, shift), tap in reads.items():
        table[phase, shift - lo] = tap
    return table, lo, hi


class UpsampleConv1d(nn.ConvTranspose1d):
    """``ConvTranspose1d`` (same parameters and checkpoint layout) computed as a sub-pixel convolution: one ordinary
    convolution with ``stride x out_channels`` outputs over ~``kernel / stride`` input taps, whose channels-last output
    reshapes for free into the ``stride``-times-longer signal. The transposed form multiplies the zeros of a
    stride-dilated input on backends that lower it to a GEMM (``stride`` times the work) or a naive loop (MLX's CPU)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int, padding: int) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=padding)
        self._taps, lo, self._hi = _subpixel_taps(kernel_size, stride, padding)
        self._left = -lo  # zero padding before the input; negative only for padding ~ kernel size (no vocoder has it)

    def __call__(self, x: mx.array) -> mx.array:
        if self._left < 0:
            return super().__call__(x)
        out_channels, kernel, in_channels = self.weight.shape
        stride, length = self.stride, x.shape[1]
        out_length = (length - 1) * stride - 2 * self.padding + kernel
        steps = -(-out_length // stride)
        # (O, K, I) -> (stride * O, shifts, I), phase-major, with a zero tap where a phase has no tap at a shift.
        weight = mx.concatenate([self.weight, mx.zeros((out_channels, 1, in_channels), self.weight.dtype)], axis=1)
        weight = mx.take(weight, mx.array(self._taps.reshape(-1)), axis=1)
        weight = weight.reshape(out_channels, stride, -1, in_channels).transpose(1, 0, 2, 3)
        weight = weight.reshape(stride * out_channels, -1, in_channels)
        right = max(0, steps - length + self._hi)
        y = mx.conv_general(x, weight, padding=([self._left], [right]))[:, :steps]
        if "bias" in self:
            y = y + mx.tile(self.bias, stride)
        return y.reshape(x.shape[0], steps * stride, out_channels)[:, :out_length]


class ResBlock1(nn.Module):
    """HiFi-GAN residual block: three (LeakyReLU, dilated conv, LeakyReLU, conv) pairs."""

    def __init__(self, channels: int, kernel_size: int, dilations: tuple[int, ...]) -> None:
        super().__init__()
        self.convs1 = [
            DilatedConv1d(channels, channels, kernel_size, dilation=d, padding=_same_padding(kernel_size, d))
            for d in dilations
        ]
        self.convs2 = [
            nn.Conv1d(channels, channels, kernel_size, padding=_same_padding(kernel_size, 1)) for _ in dilations
        ]

    def __call__(self, x: mx.array) -> mx.array:
        for conv1, conv2 in zip(self.convs1, self.convs2, strict=True):
            h = conv1(nn.leaky_relu(x, LRELU_SLOPE))
            x = x + conv2(nn.leaky_relu(h, LRELU_SLOPE))
        return x


def _snake(x: mx.array, log_alpha: mx.array, log_scale: mx.array) -> mx.array:
    """``x + sin^2(a x) / b`` with ``a = e^log_alpha`` and ``b = e^log_scale`` (Snake: b = a; SnakeBeta: its own)."""
    # The parameters in x's dtype first (bf16 weights in a float32 BWE call); square, not ** 2: a power is a libm
    # pow per element on MLX's CPU (~2x the whole activation's time there).
    log_alpha, log_scale = log_alpha.astype(x.dtype), log_scale.astype(x.dtype)
    return x + (1.0 / (mx.exp(log_scale) + 1e-9)) * mx.square(mx.sin(x * mx.exp(log_alpha)))


class Snake(nn.Module):
    """Snake / SnakeBeta activation with log-scale trainable ``alpha`` (and ``beta``) per channel."""

    def __init__(self, channels: int, with_beta: bool) -> None:
        super().__init__()
        self.alpha = mx.zeros((channels,))
        if with_beta:
            self.beta = mx.zeros((channels,))

    @property
    def log_scale(self) -> mx.array:
        return self.beta if "beta" in self else self.alpha

    def __call__(self, x: mx.array) -> mx.array:
        return _snake(x, self.alpha, self.log_scale)


# BigVGAN's anti-aliased activations resample by 2 with 12-tap Kaiser-sinc filters (ltx-core's Activation1d defaults).
RATIO, TAPS = 2, 12
UP_PAD = TAPS // RATIO - 1  # replicate padding before the transposed convolution
UP_CROP = (UP_PAD * RATIO + (TAPS - RATIO) // 2, UP_PAD * RATIO + (TAPS - RATIO + 1) // 2)
DOWN_PAD = (TAPS // 2 - 1, TAPS // 2)


def _kaiser_taps() -> mx.array:
    return mx.array(kaiser_sinc_filter(0.5 / RATIO, 0.6 / RATIO, TAPS)).reshape(1, 1, TAPS)


class UpSample1d(nn.Module):
    """Holds the upsampling filter (checkpoint buffer ``upsample.filter``)."""

    def __init__(self) -> None:
        super().__init__()
        self.filter = _kaiser_taps()


class LowPassFilter1d(nn.Module):
    """Holds the anti-aliasing low-pass filter (checkpoint buffer ``downsample.lowpass.filter``)."""

    def __init__(self) -> None:
        super().__init__()
        self.filter = _kaiser_taps()


class DownSample1d(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lowpass = LowPassFilter1d()


# How far past each end of the input the low-pass reads the upsampled signal's phases.
_READS = lowpass_reads(TAPS, RATIO, DOWN_PAD[0])
READ_EXTENT = (max(0, -min(m for _, m in _READS)), max(0, max(m for _, m in _READS)))


@mx.compile
def _anti_aliased_snake(
    x: mx.array,
    up_taps: mx.array,
    down_taps: mx.array,
    log_alpha: mx.array,
    log_scale: mx.array,
    is_before: mx.array,
    inside: mx.array,
) -> mx.array:
    """x2 Kaiser-sinc upsample, Snake, low-pass and decimate x2 (BigVGAN's 12-tap filters), in polyphase form and
    fused by compilation: this runs ~200 times per second of LTX-2.3 audio, and unfused every tap is its own kernel."""
    snake = functools.partial(_snake, log_alpha=log_alpha, log_scale=log_scale)
    masks = (is_before, inside)
    return lowpass_of_upsampled(x, up_taps, down_taps, RATIO, UP_PAD, UP_CROP[0], DOWN_PAD[0], snake, masks)


class Activation1d(nn.Module):
    """Anti-aliased activation: upsample x2, activation, low-pass and decimate x2 (one fused kernel on a CUDA GPU,
    see ``snake_kernel``; compiled MLX ops elsewhere)."""

    def __init__(self, act: Snake) -> None:
        super().__init__()
        self.act = act
        self.upsample = UpSample1d()
        self.downsample = DownSample1d()

    def __call__(self, x: mx.array) -> mx.array:
        taps_up, taps_down = self.upsample.filter, self.downsample.lowpass.filter
        if x.size and cuda_gpu():
            return snake_kernel.anti_aliased_snake(x, taps_up, taps_down, self.act.alpha, self.act.log_scale)
        masks = edge_masks(x.shape[1], *READ_EXTENT)
        return _anti_aliased_snake(x, taps_up, taps_down, self.act.alpha, self.act.log_scale, *masks)


class AMPBlock1(nn.Module):
    """BigVGAN residual block with anti-aliased (Snake|SnakeBeta) activations."""

    def __init__(self, channels: int, kernel_size: int, dilations: tuple[int, ...], activation: str) -> None:
        super().__init__()
        with_beta = activation == "snakebeta"
        self.convs1 = [
            DilatedConv1d(channels, channels, kernel_size, dilation=d, padding=_same_padding(kernel_size, d))
            for d in dilations
        ]
        self.convs2 = [
            nn.Conv1d(channels, channels, kernel_size, padding=_same_padding(kernel_size, 1)) for _ in dilations
        ]
        self.acts1 = [Activation1d(Snake(channels, with_beta)) for _ in dilations]
        self.acts2 = [Activation1d(Snake(channels, with_beta)) for _ in dilations]

    def __call__(self, x: mx.array) -> mx.array:
        for conv1, conv2, act1, act2 in zip(self.convs1, self.convs2, self.acts1, self.acts2, strict=True):
            x = x + conv2(act2(conv1(act1(x))))
        return x


class Vocoder(nn.Module):
    """Mel-to-waveform generator (ltx-core ``Vocoder``), HiFi-GAN or BigVGAN by ``config.resblock``."""

    def __init__(self, config: VocoderConfig) -> None:
        super().__init__()
        self.config = config
        self.is_amp = config.resblock == "AMP1"
        base = config.upsample_initial_channel
        self.conv_pre = nn.Conv1d(MEL_CHANNELS, base, 7, padding=3)
        self.ups = [
            UpsampleConv1d(base // 2**i, base // 2 ** (i + 1), k, stride=s, padding=(k - s) // 2)
            for i, (s, k) in enumerate(zip(config.upsample_rates, config.upsample_kernel_sizes, strict=True))
        ]
        resblocks = []
        for i in range(len(config.upsample_rates)):
            channels = base // 2 ** (i + 1)
            for k, dilations in zip(config.resblock_kernel_sizes, config.resblock_dilation_sizes, strict=True):
                if self.is_amp:
                    resblocks.append(AMPBlock1(channels, k, tuple(dilations), config.activation))
                else:
                    resblocks.append(ResBlock1(channels, k, tuple(dilations)))
        self.resblocks = resblocks
        final_channels = base // 2 ** len(config.upsample_rates)
        if self.is_amp:
            self.act_post = Activation1d(Snake(final_channels, with_beta=True))
        self.conv_post = nn.Conv1d(final_channels, 2, 7, padding=3, bias=config.use_bias_at_final)

    @property
    def output_sampling_rate(self) -> int:
        return self.config.output_sampling_rate

    def waveform(self, mel: mx.array) -> mx.array:
        """(B, 2, T, mel_bins) -> channels-last waveform (B, T * upsample_factor, 2)."""
        b, stereo, frames, bins = mel.shape
        if stereo != 2 or stereo * bins != MEL_CHANNELS:
            raise ValueError(f"vocoder input must be (B, 2, T, 64), got {tuple(mel.shape)}")
        x = self.conv_pre(mel.transpose(0, 2, 1, 3).reshape(b, frames, stereo * bins))
        kernels = len(self.config.resblock_kernel_sizes)
        for i, up in enumerate(self.ups):
            if not self.is_amp:
                x = nn.leaky_relu(x, LRELU_SLOPE)
            x = up(x)
            # Every resblock of a stage reads the same input; the stage output is their mean.
            blocks = self.resblocks[i * kernels : (i + 1) * kernels]
            total = blocks[0](x)
            for block in blocks[1:]:
                total = total + block(x)
            x = total / kernels
            # Start computing this stage while Python builds the next one's graph (~100 ops a stage; without it
            # the device waits for the whole graph): a scheduling hint, not a synchronisation.
            mx.async_eval(x)
        x = self.act_post(x) if self.is_amp else nn.leaky_relu(x, 0.01)
        x = self.conv_post(x)
        if self.config.apply_final_activation:
            x = mx.tanh(x) if self.config.use_tanh_at_final else mx.clip(x, -1, 1)
        return x

    def __call__(self, mel: mx.array) -> mx.array:
        """(B, 2, T, mel_bins) -> (B, 2, T * upsample_factor), as ltx-core."""
        return self.waveform(mel).transpose(0, 2, 1)
