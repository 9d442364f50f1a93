"""BigVGAN's anti-aliased Snake (x2 upsample, Snake, low-pass, x2 decimate) as one CUDA kernel.

The LTX-2.3 vocoder and its bandwidth extension run ~200 of these activations per call. Compiled from MLX ops
(``vocoder._anti_aliased_snake``) each is three kernels that write and read its two polyphase signals, and the
activations took half of the vocoder's time on an H100. Here one thread makes one output sample of one channel:
it reads 11 input samples, forms the 12 upsampled samples its low-pass reads, applies Snake to each and sums them,
so the input is read once and the output written once. Its arithmetic is float32 whatever the input dtype (the
MLX path computes in the input's dtype), so it equals that path to float32 rounding, and bf16 inputs to bf16's.

Only on MLX's CUDA backend (``device.cuda_gpu``); Metal and the CPU keep the compiled MLX path.
"""

from __future__ import annotations

import functools

import mlx.core as mx

TAPS = 12  # the kernel hard-codes BigVGAN's x2 resampling with 12-tap filters (ltx-core's Activation1d)

# Upsampled sample n = 2t - 5 + k (k < 12) is what the low-pass of output t reads at tap k (replicate-padded by 5
# before, 6 after). The transposed convolution (replicate padding 5, crop 15) gives n from taps kk of k's parity:
#   up[n] = 2 * sum_{kk = k mod 2} up_taps[kk] * x[clamp(t + (k - kk) / 2)],
# so output t reads x[t - 5 .. t + 5] only. Where n falls outside [0, 2L), the low-pass's replicate padding takes
# sample 0 or 2L - 1, which are themselves in the 12 (at k = 5 - 2t or 2L + 4 - 2t).
_SOURCE = """
    const long index = (long)blockIdx.x * blockDim.x + threadIdx.x;
    const int batch = x_shape[0], length = x_shape[1], channels = x_shape[2];
    if (index >= (long)batch * length * channels) return;
    const int c = index % channels;
    const long row = index / channels;  // b * length + t
    const int t = row % length;
    const T* column = x + (row - t) * channels + c;  // x[b, 0, c]

    float window[11];
    #pragma unroll
    for (int j = 0; j < 11; ++j) {
        const int i = min(max(t - 5 + j, 0), length - 1);
        window[j] = static_cast<float>(column[(long)i * channels]);
    }
    const float alpha = expf(static_cast<float>(log_alpha[c]));
    const float inverse_scale = 1.0f / (expf(static_cast<float>(log_scale[c])) + 1e-9f);

    float snake[12];
    #pragma unroll
    for (int k = 0; k < 12; ++k) {
        float u = 0.0f;
        #pragma unroll
        for (int kk = k % 2; kk < 12; kk += 2) {
            u += static_cast<float>(up_taps[kk]) * window[5 + (k - kk) / 2];
        }
        u *= 2.0f;
        const float s = sinf(alpha * u);
        snake[k] = u + inverse_scale * s * s;
    }

    const int first_k = 5 - 2 * t, last_k = 2 * length + 4 - 2 * t;
    float first = snake[0], last = snake[11];
    #pragma unroll
    for (int k = 0; k < 12; ++k) {
        first = k == first_k ? snake[k] : first;
        last = k == last_k ? snake[k] : last;
    }
    float total = 0.0f;
    #pragma unroll
    for (int k = 0; k < 12; ++k) {
        const int n = 2 * t - 5 + k;
        const float value = n < 0 ? first : (n > 2 * length - 1 ? last : snake[k]);
        total += static_cast<float>(down_taps[k]) * value;
    }
    y[index] = static_cast<T>(total);
"""


@functools.cache
def _kernel() -> object:
    return mx.fast.cuda_kernel(
        name="anti_aliased_snake",
        input_names=["x", "up_taps", "down_taps", "log_alpha", "log_scale"],
        output_names=["y"],
        source=_SOURCE,
    )


def anti_aliased_snake(
    x: mx.array, up_taps: mx.array, down_taps: mx.array, log_alpha: mx.array, log_scale: mx.array
) -> mx.array:
    """``x`` (B, L, C) through x2 Kaiser-sinc upsampling, Snake(``e^log_alpha``, ``e^log_scale``) and the x2
    low-pass decimation, on a CUDA GPU. The taps are the checkpoint's filters (12 each, any layout)."""
    up_taps, down_taps = up_taps.reshape(-1), down_taps.reshape(-1)
    if up_taps.size != TAPS or down_taps.size != TAPS:
        raise ValueError(f"the fused anti-aliased Snake takes {TAPS}-tap filters, got {up_taps.size}, {down_taps.size}")
    # Every input's dtype is in the kernel's name: MLX caches the compiled kernel by name, and the signature it
    # compiled has each input's type.
    template = [("T", x.dtype), ("F_UP", up_taps.dtype), ("F_DOWN", down_taps.dtype)]
    template += [("P_ALPHA", log_alpha.dtype), ("P_SCALE", log_scale.dtype)]
    return _kernel()(
        inputs=[x, up_taps, down_taps, log_alpha, log_scale],
        template=template,
        grid=(x.size, 1, 1),
        threadgroup=(256, 1, 1),
        output_shapes=[x.shape],
        output_dtypes=[x.dtype],
    )[0]
