"""LTX-2 latent upsamplers (spatial x2, rational x1.5, temporal x2), as ltx-core's ``LatentUpsampler``.

They work on un-normalized latents: `upsample_latent` wraps them with the video VAE's per-channel
statistics exactly as ltx-core's ``upsample_video`` does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import mlx.core as mx
import mlx.nn as nn

from ltx_backend.models.statistics import PerChannelStatistics
from ltx_backend.models.video_vae import depth_to_space

RATIONAL_SCALES = {0.75: (3, 4), 1.5: (3, 2), 2.0: (2, 1), 4.0: (4, 1)}


@dataclass(frozen=True)
class UpsamplerConfig:
    in_channels: int = 128
    mid_channels: int = 512
    num_blocks_per_stage: int = 4
    dims: int = 3
    spatial_upsample: bool = True
    temporal_upsample: bool = False
    spatial_scale: float = 2.0
    rational_resampler: bool = False

    @classmethod
    def from_config(cls, cfg: dict) -> UpsamplerConfig:
        """From ltx-core's flat upsampler config, with its defaults."""
        config = cls(
            in_channels=cfg.get("in_channels", 128),
            mid_channels=cfg.get("mid_channels", 512),
            num_blocks_per_stage=cfg.get("num_blocks_per_stage", 4),
            dims=cfg.get("dims", 3),
            spatial_upsample=cfg.get("spatial_upsample", True),
            temporal_upsample=cfg.get("temporal_upsample", False),
            spatial_scale=float(cfg.get("spatial_scale", 2.0)),
            rational_resampler=cfg.get("rational_resampler", False),
        )
        if config.dims not in (2, 3):
            raise ValueError(f"upsampler dims must be 2 or 3, got {config.dims}")
        if not (config.spatial_upsample or config.temporal_upsample):
            raise ValueError("an upsampler must upsample in space, in time, or both")
        if config.rational_resampler and config.spatial_scale not in RATIONAL_SCALES:
            raise ValueError(f"unsupported rational scale {config.spatial_scale} (supported: {list(RATIONAL_SCALES)})")
        return config

    @classmethod
    def from_weights(cls, shapes: dict[str, tuple[int, ...]]) -> UpsamplerConfig:
        """The config a checkpoint without one implies: every field is fixed by which tensors exist and their shapes.

        Only output-channel axes (axis 0, the same in PyTorch and MLX layouts) and ranks are read.
        """
        mid = shapes["initial_conv.weight"][0]
        in_channels = shapes["final_conv.weight"][0]
        dims = len(shapes["initial_conv.weight"]) - 2
        blocks = len({key.split(".")[1] for key in shapes if key.startswith("res_blocks.")})
        if "upsampler.conv.weight" in shapes:  # rational spatial resampler
            # The stored conv fixes the numerator; the published rational upscalers are x1.5 (3/2), x2, x4.
            num = math.isqrt(shapes["upsampler.conv.weight"][0] // mid)
            scale = {2: 2.0, 3: 1.5, 4: 4.0}[num]
            return cls(in_channels, mid, blocks, dims, True, False, scale, True)
        factor = shapes["upsampler.0.weight"][0] // mid
        if len(shapes["upsampler.0.weight"]) == 4:
            return cls(in_channels, mid, blocks, dims, True, False, 2.0, False)
        return cls(in_channels, mid, blocks, dims, factor == 8, True, 2.0, False)


def _conv(dims: int, in_channels: int, out_channels: int) -> nn.Module:
    return (nn.Conv2d if dims == 2 else nn.Conv3d)(in_channels, out_channels, 3, padding=1)


class ResBlock(nn.Module):
    def __init__(self, channels: int, dims: int) -> None:
        super().__init__()
        self.conv1 = _conv(dims, channels, channels)
        self.norm1 = nn.GroupNorm(32, channels, pytorch_compatible=True)
        self.conv2 = _conv(dims, channels, channels)
        self.norm2 = nn.GroupNorm(32, channels, pytorch_compatible=True)

    def __call__(self, x: mx.array) -> mx.array:
        h = self.norm2(self.conv2(nn.silu(self.norm1(self.conv1(x)))))
        return nn.silu(h + x)


def pixel_shuffle_2d(x: mx.array, factor: int) -> mx.array:
    """(N, H, W, c*f*f) -> (N, H*f, W*f, c), channel order ``(c p1 p2)``."""
    n, h, w, channels = x.shape
    c = channels // (factor * factor)
    x = x.reshape(n, h, w, c, factor, factor).transpose(0, 1, 4, 2, 5, 3)
    return x.reshape(n, h * factor, w * factor, c)


class BlurDownsample(nn.Module):
    """Anti-aliased decimation by `stride` with a fixed 5x5 binomial kernel (stored in checkpoints)."""

    def __init__(self, stride: int, kernel_size: int = 5) -> None:
        super().__init__()
        self.stride = stride
        taps = mx.array([math.comb(kernel_size - 1, k) for k in range(kernel_size)], dtype=mx.float32)
        kernel = taps[:, None] * taps[None, :]
        self.kernel = (kernel / kernel.sum())[None, None]  # (1, 1, k, k) as ltx-core stores it

    def __call__(self, x: mx.array) -> mx.array:
        if self.stride == 1:
            return x
        n, h, w, c = x.shape
        k = self.kernel.shape[-1]
        # Depthwise: fold channels into the batch and convolve each with the same single-channel kernel.
        planes = x.transpose(0, 3, 1, 2).reshape(n * c, h, w, 1)
        out = mx.conv2d(planes, self.kernel.reshape(1, k, k, 1).astype(x.dtype), stride=self.stride, padding=k // 2)
        return out.reshape(n, c, *out.shape[1:3]).transpose(0, 2, 3, 1)


class RationalResampler(nn.Module):
    """Spatial scale num/den: conv + pixel shuffle by num, then blur-downsample by den (per frame)."""

    def __init__(self, channels: int, scale: float) -> None:
        super().__init__()
        self.num, den = RATIONAL_SCALES[scale]
        self.conv = nn.Conv2d(channels, self.num**2 * channels, 3, padding=1)
        self.blur_down = BlurDownsample(den)

    def __call__(self, frames: mx.array) -> mx.array:
        return self.blur_down(pixel_shuffle_2d(self.conv(frames), self.num))


class LatentUpsampler(nn.Module):
    """Un-normalized latent (B, C, F, H, W) -> upsampled latent, as ltx-core's ``LatentUpsampler``."""

    def __init__(self, config: UpsamplerConfig) -> None:
        super().__init__()
        self.config = config
        mid, dims = config.mid_channels, config.dims
        self.initial_conv = _conv(dims, config.in_channels, mid)
        self.initial_norm = nn.GroupNorm(32, mid, pytorch_compatible=True)
        self.res_blocks = [ResBlock(mid, dims) for _ in range(config.num_blocks_per_stage)]
        if config.spatial_upsample and config.temporal_upsample:
            self.upsampler = [nn.Conv3d(mid, 8 * mid, 3, padding=1)]
        elif config.spatial_upsample and config.rational_resampler:
            self.upsampler = RationalResampler(mid, config.spatial_scale)
        elif config.spatial_upsample:
            self.upsampler = [nn.Conv2d(mid, 4 * mid, 3, padding=1)]
        else:
            self.upsampler = [nn.Conv3d(mid, 2 * mid, 3, padding=1)]
        self.post_upsample_res_blocks = [ResBlock(mid, dims) for _ in range(config.num_blocks_per_stage)]
        self.final_conv = _conv(dims, mid, config.in_channels)

    def _per_frame(self, x: mx.array, fn) -> mx.array:
        b, f = x.shape[:2]
        out = fn(x.reshape(b * f, *x.shape[2:]))
        return out.reshape(b, f, *out.shape[1:])

    def upsample(self, latent: mx.array) -> mx.array:
        """Channels-last: (B, F, H, W, C) -> upsampled (B, F', H', W', C)."""
        config = self.config
        if config.dims == 2:
            return self._per_frame(latent, self._forward_2d)
        x = nn.silu(self.initial_norm(self.initial_conv(latent)))
        for block in self.res_blocks:
            x = block(x)
        if config.temporal_upsample:
            stride = (2, 2, 2) if config.spatial_upsample else (2, 1, 1)
            x = depth_to_space(self.upsampler[0](x), stride)[:, 1:]  # the first frame stands for one pixel frame
        elif config.rational_resampler:
            x = self._per_frame(x, self.upsampler)
        else:
            x = self._per_frame(x, lambda frames: pixel_shuffle_2d(self.upsampler[0](frames), 2))
        for block in self.post_upsample_res_blocks:
            x = block(x)
        return self.final_conv(x)

    def _forward_2d(self, frames: mx.array) -> mx.array:
        x = nn.silu(self.initial_norm(self.initial_conv(frames)))
        for block in self.res_blocks:
            x = block(x)
        x = self.upsampler(x) if self.config.rational_resampler else pixel_shuffle_2d(self.upsampler[0](x), 2)
        for block in self.post_upsample_res_blocks:
            x = block(x)
        return self.final_conv(x)

    def __call__(self, latent: mx.array) -> mx.array:
        return self.upsample(latent.transpose(0, 2, 3, 4, 1)).transpose(0, 4, 1, 2, 3)


def upsample_latent(latent: mx.array, upsampler: LatentUpsampler, statistics: PerChannelStatistics) -> mx.array:
    """Normalized latent (B, C, F, H, W) -> normalized upsampled latent (ltx-core ``upsample_video``)."""
    x = statistics.un_normalize(latent.transpose(0, 2, 3, 4, 1))
    return statistics.normalize(upsampler.upsample(x)).transpose(0, 4, 1, 2, 3)
