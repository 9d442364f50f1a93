"""The vocoder's rewritten operations against their direct definitions, at every production configuration.

The parity tests (test_audio_parity.py) check whole tiny models against ltx-core; these check each rewrite on its own,
including the shapes and edge cases the tiny models do not reach: sub-pixel transposed convolutions for every
LTX-2.0 / LTX-2.3 (kernel, stride), the CPU's phase-folded dilated convolutions, and the polyphase anti-aliased
activation and skip resampler against zero-stuffing written out in NumPy (ltx-core's ``UpSample1d`` /
``LowPassFilter1d``) down to one-sample inputs.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest

from ltx_backend.device import cuda_gpu
from ltx_backend.models import vocoder
from ltx_backend.models.bwe import VocoderWithBWE
from ltx_backend.models.resample import hann_sinc_filter, kaiser_sinc_filter
from ltx_backend.models.vocoder import (
    DOWN_PAD,
    RATIO,
    TAPS,
    UP_CROP,
    UP_PAD,
    Activation1d,
    DilatedConv1d,
    Snake,
    UpsampleConv1d,
)

TOLERANCE = 1e-5  # float32, of peak
# (kernel, stride) of every upsampling layer: LTX-2.0 HiFi-GAN, LTX-2.3 BigVGAN and its BWE generator.
UPSAMPLERS = [(16, 6), (15, 5), (8, 2), (4, 2), (11, 5), (12, 6)]


def _rel(a: mx.array | np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(np.array(a) - b).max() / np.abs(b).max())


@pytest.mark.parametrize(("kernel", "stride"), UPSAMPLERS)
@pytest.mark.parametrize("length", [1, 2, 9])
def test_subpixel_upsampling_equals_transposed_convolution(kernel: int, stride: int, length: int) -> None:
    mx.random.seed(kernel * 100 + length)
    ours = UpsampleConv1d(6, 4, kernel, stride=stride, padding=(kernel - stride) // 2)
    direct = nn.ConvTranspose1d(6, 4, kernel, stride=stride, padding=(kernel - stride) // 2)
    direct.update(ours.parameters())
    x = mx.random.normal((2, length, 6))
    expected = np.array(direct(x))
    got = ours(x)
    assert got.shape == expected.shape == (2, length * stride, 4)
    assert _rel(got, expected) <= TOLERANCE


@pytest.mark.parametrize(("kernel", "dilation"), [(3, 3), (3, 5), (7, 3), (11, 5)])
@pytest.mark.parametrize("length", [1, 4, 17])
def test_dilated_convolution_folded_on_cpu_equals_direct(kernel: int, dilation: int, length: int) -> None:
    mx.random.seed(kernel * 100 + length)
    padding = (kernel * dilation - dilation) // 2
    ours = DilatedConv1d(5, 3, kernel, dilation=dilation, padding=padding)
    direct = nn.Conv1d(5, 3, kernel, dilation=dilation, padding=padding)
    direct.update(ours.parameters())
    x = mx.random.normal((2, length, 5))
    device = mx.default_device()
    mx.set_default_device(mx.cpu)  # the fold is taken on the CPU only
    try:
        got, expected = ours(x), np.array(direct(x))
    finally:
        mx.set_default_device(device)
    assert got.shape == expected.shape
    assert _rel(got, expected) <= TOLERANCE


def _replicate(x: np.ndarray, left: int, right: int) -> np.ndarray:
    return np.pad(x, [(0, 0), (left, right), (0, 0)], mode="edge")


def _zero_stuffed_upsample(x: np.ndarray, taps: np.ndarray, ratio: int, pad: int, crop: tuple[int, int]):
    """ltx-core UpSample1d: ratio * conv_transpose1d(replicate_pad(x), taps, stride=ratio)[crop], per channel."""
    x = _replicate(x, pad, pad)
    b, length, c = x.shape
    full = np.zeros((b, (length - 1) * ratio + taps.size, c))
    for i in range(length):
        full[:, i * ratio : i * ratio + taps.size] += x[:, i : i + 1] * taps[None, :, None]
    return ratio * full[:, crop[0] : full.shape[1] - crop[1]]


def _strided_lowpass(x: np.ndarray, taps: np.ndarray, stride: int, pad: tuple[int, int]) -> np.ndarray:
    x = _replicate(x, *pad)
    n = (x.shape[1] - taps.size) // stride + 1
    return sum(taps[k] * x[:, k : k + stride * (n - 1) + 1 : stride] for k in range(taps.size))


def _activation(channels: int, rng: np.random.Generator) -> tuple[Activation1d, np.ndarray]:
    """An anti-aliased SnakeBeta with random parameters and a low-pass filter distinct from the upsampling one."""
    act = Activation1d(Snake(channels, with_beta=True))
    act.act.update({"alpha": mx.array(rng.normal(0, 0.5, channels)), "beta": mx.array(rng.normal(0, 0.5, channels))})
    down = kaiser_sinc_filter(0.5 / RATIO, 0.6 / RATIO, TAPS) * np.linspace(0.9, 1.1, TAPS, dtype=np.float32)
    act.downsample.lowpass.filter = mx.array(down).reshape(1, 1, TAPS)
    return act, down


# On a CUDA GPU this is the fused kernel (snake_kernel), elsewhere the compiled polyphase form.
@pytest.mark.parametrize("length", [1, 2, 3, 6, 40, 1001])
def test_polyphase_activation_equals_zero_stuffing(length: int) -> None:
    rng = np.random.default_rng(length)
    act, down = _activation(4, rng)
    x = rng.normal(size=(2, length, 4)).astype(np.float32)

    up = _zero_stuffed_upsample(x, np.array(act.upsample.filter).reshape(-1), RATIO, UP_PAD, UP_CROP)
    alpha, beta = np.exp(np.array(act.act.alpha)), np.exp(np.array(act.act.beta))
    up = up + 1.0 / (beta + 1e-9) * np.sin(up * alpha) ** 2
    expected = _strided_lowpass(up, down, RATIO, DOWN_PAD)
    got = act(mx.array(x))
    assert got.shape == expected.shape == (2, length, 4)
    assert _rel(got, expected) <= TOLERANCE


@pytest.mark.skipif(not cuda_gpu(), reason="the fused kernel runs on MLX's CUDA backend only")
@pytest.mark.parametrize(("dtype", "tolerance"), [(mx.float32, 1e-5), (mx.bfloat16, 2e-2)])
@pytest.mark.parametrize("length", [1, 7, 2500])
def test_fused_cuda_activation_equals_the_compiled_one(
    dtype: mx.Dtype, tolerance: float, length: int, monkeypatch
) -> None:
    """bf16 inputs and parameters too (the compiled form computes in bf16, the kernel in float32), and a channel
    count that is no multiple of a warp."""
    act, _ = _activation(37, np.random.default_rng(length))
    act.set_dtype(dtype)
    x = mx.array(np.random.default_rng(0).normal(size=(2, length, 37))).astype(dtype)
    fused = act(x)
    monkeypatch.setattr(vocoder, "cuda_gpu", lambda: False)
    compiled = act(x)
    assert fused.dtype == compiled.dtype == dtype
    assert _rel(fused.astype(mx.float32), np.array(compiled.astype(mx.float32))) <= tolerance


@pytest.mark.parametrize("length", [1, 5, 33])
def test_polyphase_skip_resampler_equals_zero_stuffing(length: int) -> None:
    ratio = 3
    taps, width = hann_sinc_filter(ratio)
    x = np.random.default_rng(length).normal(size=(1, length, 2)).astype(np.float32)
    expected = _zero_stuffed_upsample(x, taps, ratio, width, (2 * width * ratio, taps.size - ratio))
    resampler = VocoderWithBWE.__new__(VocoderWithBWE)  # only the resampler's state, not a whole model
    nn.Module.__init__(resampler)
    resampler.ratio, resampler._skip_taps, resampler._skip_pad = ratio, mx.array(taps), width
    got = resampler.resample(mx.array(x))
    assert got.shape == expected.shape == (1, length * ratio, 2)
    assert _rel(got, expected) <= TOLERANCE
