"""LTX-2 video VAE: latent (B, 128, F', H/32, W/32) <-> frames (B, 3, 8(F'-1)+1, H, W) in [-1, 1].

Follows ltx-core's ``ltx_core.model.video_vae`` (causal 3-D convolutions, pixel norm, depth-to-space
upsampling, space-to-depth downsampling, per-channel latent statistics, optional timestep
conditioning). Public tensors use ltx-core's (batch, channels, frames, height, width) order; inside,
everything is channels-last (batch, frames, height, width, channels), MLX's convolution layout.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from ltx_backend.device import cuda_gpu
from ltx_backend.models.norms import PixelNorm
from ltx_backend.models.statistics import PREFIX as STATS_PREFIX
from ltx_backend.models.statistics import PerChannelStatistics, statistics_key
from ltx_backend.models.timestep import TimestepEmbedder

PADDING_MODES = ("zeros", "reflect", "replicate", "circular")
DECODER_BLOCKS = ("res_x", "res_x_y", "compress_time", "compress_space", "compress_all")
ENCODER_BLOCKS = (
    "res_x", "res_x_y", "compress_time", "compress_space", "compress_all", "compress_all_x_y",
    "compress_all_res", "compress_space_res", "compress_time_res",
)  # fmt: skip
TIME_SCALE, SPACE_SCALE = 8, 32  # frames / pixels per latent cell
# Activations from this size up are submitted one residual block at a time when a decode runs through a Pipeline
# (each submission costs the device the time the host takes to encode the next: small tiles keep whole groups).
SUBMIT_EACH_RESBLOCK_BYTES = 256 * 2**20
# A decode in time chunks submits every residual block: its chunks are sized for memory (H100, 768x512x121,
# `aggressive`: 2.57 GB and 1.09 s, against 3.20 GB and 0.97 s from 32 MB and 4.87 GB from 256 MB for `default`).
SUBMIT_EACH_RESBLOCK_BYTES_IN_CHUNKS = 0

# The vae section of the official LTX-2.0 header, for checkpoints that carry no vae config.
LTX2_VAE_SECTION = {
    "dims": 3, "in_channels": 3, "out_channels": 3, "latent_channels": 128, "patch_size": 4,
    "norm_layer": "pixel_norm", "latent_log_var": "uniform", "causal_decoder": False, "timestep_conditioning": False,
    "encoder_blocks": [
        ["res_x", {"num_layers": 4}], ["compress_space_res", {"multiplier": 2}], ["res_x", {"num_layers": 6}],
        ["compress_time_res", {"multiplier": 2}], ["res_x", {"num_layers": 6}], ["compress_all_res", {"multiplier": 2}],
        ["res_x", {"num_layers": 2}], ["compress_all_res", {"multiplier": 2}], ["res_x", {"num_layers": 2}],
    ],
    "decoder_blocks": [
        ["res_x", {"num_layers": 5, "inject_noise": False}], ["compress_all", {"residual": True, "multiplier": 2}],
        ["res_x", {"num_layers": 5, "inject_noise": False}], ["compress_all", {"residual": True, "multiplier": 2}],
        ["res_x", {"num_layers": 5, "inject_noise": False}], ["compress_all", {"residual": True, "multiplier": 2}],
        ["res_x", {"num_layers": 5, "inject_noise": False}],
    ],
}  # fmt: skip

# The vae section of the official LTX-2.3 header (its decoder half).
LTX23_VAE_SECTION = {
    **LTX2_VAE_SECTION,
    "spatial_padding_mode": "zeros",
    "decoder_blocks": [
        ["res_x", {"num_layers": 4}], ["compress_space", {"multiplier": 2}], ["res_x", {"num_layers": 6}],
        ["compress_time", {"multiplier": 2}], ["res_x", {"num_layers": 4}], ["compress_all", {"multiplier": 1}],
        ["res_x", {"num_layers": 2}], ["compress_all", {"multiplier": 2}], ["res_x", {"num_layers": 2}],
    ],
}  # fmt: skip


def _blocks(raw: list, allowed: tuple[str, ...]) -> tuple[tuple[str, dict], ...]:
    blocks = []
    for name, params in raw:
        if name not in allowed:
            raise ValueError(f"unsupported VAE block {name!r} (supported: {', '.join(allowed)})")
        params = {"num_layers": params} if isinstance(params, int) else dict(params)
        if params.get("inject_noise"):
            raise ValueError("VAE blocks with inject_noise are not supported (no LTX-2 checkpoint uses them)")
        blocks.append((name, params))
    return tuple(blocks)


@dataclass(frozen=True)
class VideoVAEConfig:
    """The ``vae`` config section, with ltx-core's configurator defaults for what it leaves out."""

    latent_channels: int = 128
    in_channels: int = 3
    out_channels: int = 3
    patch_size: int = 4
    norm_layer: str = "pixel_norm"
    latent_log_var: str = "uniform"
    causal_decoder: bool = False
    timestep_conditioning: bool = True
    decoder_base_channels: int = 128
    decoder_padding: str = "reflect"
    encoder_padding: str = "zeros"
    decoder_blocks: tuple[tuple[str, dict], ...] = ()
    encoder_blocks: tuple[tuple[str, dict], ...] = ()

    @classmethod
    def from_config(cls, config: dict) -> VideoVAEConfig:
        """From a checkpoint's config sections (the LTX-2.0 header values when it has no vae section)."""
        vae = config.get("vae") or LTX2_VAE_SECTION
        if vae.get("dims", 3) != 3:
            raise ValueError(f"only 3-D video VAEs exist in LTX-2 (config says dims={vae.get('dims')})")
        if vae.get("norm_layer", "pixel_norm") not in ("pixel_norm", "group_norm"):
            raise ValueError(f"unknown norm_layer {vae.get('norm_layer')!r}")
        if vae.get("latent_log_var", "uniform") not in ("per_channel", "uniform", "constant", "none"):
            raise ValueError(f"unknown latent_log_var {vae.get('latent_log_var')!r}")
        padding = vae.get("spatial_padding_mode")
        if padding is not None and padding not in PADDING_MODES:
            raise ValueError(f"unknown spatial_padding_mode {padding!r}")
        return cls(
            latent_channels=vae.get("latent_channels", 128),
            in_channels=vae.get("in_channels", 3),
            out_channels=vae.get("out_channels", 3),
            patch_size=vae.get("patch_size", 4),
            norm_layer=vae.get("norm_layer", "pixel_norm"),
            latent_log_var=vae.get("latent_log_var", "uniform"),
            causal_decoder=vae.get("causal_decoder", False),
            timestep_conditioning=vae.get("timestep_conditioning", True),
            decoder_base_channels=vae.get("decoder_base_channels", 128),
            # ltx-core's decoder defaults to reflect padding and its encoder to zeros.
            decoder_padding=padding or "reflect",
            encoder_padding=padding or "zeros",
            decoder_blocks=_blocks(vae.get("decoder_blocks", []), DECODER_BLOCKS),
            encoder_blocks=_blocks(vae.get("encoder_blocks", []), ENCODER_BLOCKS),
        )


# ---------------------------------------------------------------------------------------------------
# Layout helpers (channels-last)


def _edge_indices(n: int, pad: int, mode: str) -> np.ndarray:
    """Indices that pad an axis of `n` by `pad` on each side (reflect, replicate or circular), as torch's F.pad."""
    if (mode == "reflect" and n <= pad) or (mode == "circular" and n < pad):  # the indices would leave the axis
        raise ValueError(f"{mode} padding of {pad} needs more than {pad} pixels on the axis, not {n}")
    inside = np.arange(n)
    if mode == "reflect":
        before, after = np.arange(pad, 0, -1), np.arange(n - 2, n - 2 - pad, -1)
    elif mode == "replicate":
        before, after = np.zeros(pad, dtype=int), np.full(pad, n - 1)
    else:  # circular
        before, after = np.arange(n - pad, n), np.arange(pad)
    return np.concatenate([before, inside, after]).astype(np.int32)


@functools.lru_cache(maxsize=256)
def _axis_sources(
    batch: int, frames: int, before: int, after: int, rows: int, cols: int, pad: int, mode: str
) -> tuple[mx.array, mx.array, mx.array]:
    """Per axis of `padded_volume`'s output, the flat offset of each position's source: (sample, frame) pairs,
    rows, columns, shaped to broadcast into (sample x frame, row, column). A few KB per shape: made once per shape."""
    times = np.concatenate([np.zeros(before, dtype=np.int64), np.arange(frames),
                            np.full(after, frames - 1)])  # fmt: skip
    plane = rows * cols
    samples = (np.arange(batch)[:, None] * (frames * plane) + times[None, :] * plane).reshape(-1, 1, 1)
    rows_idx, cols_idx = (_edge_indices(n, pad, mode) if pad else np.arange(n) for n in (rows, cols))
    return tuple(
        mx.array(a.astype(np.int32)) for a in (samples, (rows_idx * cols)[None, :, None], cols_idx[None, None, :])
    )


def _padding_indices(
    batch: int, frames: int, before: int, after: int, rows: int, cols: int, pad: int, mode: str
) -> mx.array:
    """The flat (sample, frame, row, column) source of every voxel of `padded_volume`'s output (int32, 1/64 of a
    bf16 activation of 128 channels), composed on the device from `_axis_sources` with two broadcast adds. Whole
    arrays are not cached: the tiles of one decode have up to 12 shapes, and a cache of 32 whole arrays made on the
    host missed on every convolution of every `default` tile (48 host builds a decode); composed in the graph, the
    `default` decode's peak fell from 6.5 to 3.5 GB on an H100 (`aggressive`'s 100 small tiles pay the two adds:
    +11% time)."""
    samples, rows_idx, cols_idx = _axis_sources(batch, frames, before, after, rows, cols, pad, mode)
    return (samples + rows_idx + cols_idx).reshape(-1)


def padded_volume(x: mx.array, before: int, after: int, pad: int, mode: str, gather: bool | None = None) -> mx.array:
    """(B, F, H, W, C) with its first frame repeated `before` times and its last `after` times, and height and width
    padded by `pad` on each side in `mode`.

    On CUDA (`gather` None) one gather of the flattened volume (zeros: the gather, then a pad): taking and
    concatenating each side makes 11 kernels per LTX-2.0 decoder convolution, more than half of the decoder's
    kernels (908 -> 458 per decode), and 3 full-size copies where the gather makes one. Elsewhere the concatenations
    stay: MLX's CPU backend keeps a fixed number of operations in flight, so with fewer per convolution more of
    the convolutions' unfolded inputs were alive at once (a decoder's CPU peak rose 1.9x); Metal is not measured."""
    if mode not in PADDING_MODES:
        raise ValueError(f"unknown padding mode {mode!r}")
    if not (gather if gather is not None else cuda_gpu()):
        return _padded_by_concatenation(x, before, after, pad, mode)
    b, f, h, w, c = x.shape
    spatial = 0 if mode == "zeros" else pad  # zeros are padded after the gather
    if before or after or spatial:
        # Rows of a (voxels, channels) matrix: the gather's output is then contiguous as it comes (taking along
        # axis 1 of (B, voxels, C) left a transposed result that cost a full-size copy: +0.7 GB, untiled, H100).
        flat = _padding_indices(b, f, before, after, h, w, spatial, mode)
        x = mx.take(x.reshape(b * f * h * w, c), flat, axis=0)
        x = x.reshape(b, f + before + after, h + 2 * spatial, w + 2 * spatial, c)
    if mode == "zeros" and pad:
        x = mx.pad(x, [(0, 0), (0, 0), (pad, pad), (pad, pad), (0, 0)])
    return x


def _padded_by_concatenation(x: mx.array, before: int, after: int, pad: int, mode: str) -> mx.array:
    """`padded_volume` by taking and concatenating each side, as this decoder always did off CUDA."""
    if before or after:
        x = mx.concatenate([mx.repeat(x[:, :1], before, axis=1), x, mx.repeat(x[:, -1:], after, axis=1)], axis=1)
    if pad == 0:
        return x
    if mode == "zeros":
        return mx.pad(x, [(0, 0), (0, 0), (pad, pad), (pad, pad), (0, 0)])
    if mode == "replicate":
        return mx.pad(x, [(0, 0), (0, 0), (pad, pad), (pad, pad), (0, 0)], mode="edge")
    for axis in (2, 3):
        n = x.shape[axis]
        _edge_indices(n, pad, mode)  # refuses a pad past the axis, as torch does (MLX's take does not check)
        if mode == "reflect":
            before_side = mx.take(x, mx.arange(pad, 0, -1), axis=axis)
            after_side = mx.take(x, mx.arange(n - 2, n - 2 - pad, -1), axis=axis)
        else:  # circular
            before_side = mx.take(x, mx.arange(n - pad, n), axis=axis)
            after_side = mx.take(x, mx.arange(0, pad), axis=axis)
        x = mx.concatenate([before_side, x, after_side], axis=axis)
    return x


def spatial_pad(x: mx.array, pad: int, mode: str) -> mx.array:
    """Pad height and width (axes 2, 3 of (B, F, H, W, C)) by `pad` on each side."""
    return padded_volume(x, 0, 0, pad, mode)


def depth_to_space(x: mx.array, stride: tuple[int, int, int]) -> mx.array:
    """(B, F, H, W, c*p1*p2*p3) -> (B, F*p1, H*p2, W*p3, c), channel order ``(c p1 p2 p3)``."""
    b, f, h, w, channels = x.shape
    p1, p2, p3 = stride
    c = channels // (p1 * p2 * p3)
    x = x.reshape(b, f, h, w, c, p1, p2, p3).transpose(0, 1, 5, 2, 6, 3, 7, 4)
    return x.reshape(b, f * p1, h * p2, w * p3, c)


def space_to_depth(x: mx.array, stride: tuple[int, int, int]) -> mx.array:
    """(B, F*p1, H*p2, W*p3, c) -> (B, F, H, W, c*p1*p2*p3), channel order ``(c p1 p2 p3)``."""
    b, f, h, w, c = x.shape
    p1, p2, p3 = stride
    x = x.reshape(b, f // p1, p1, h // p2, p2, w // p3, p3, c).transpose(0, 1, 3, 5, 7, 2, 4, 6)
    return x.reshape(b, f // p1, h // p2, w // p3, c * p1 * p2 * p3)


def patchify(x: mx.array, patch: int) -> mx.array:
    """(B, F, H*q, W*r, C) -> (B, F, H, W, C*r*q): ltx-core's ``(c p r q)`` channel order (width before height)."""
    b, f, h, w, c = x.shape
    x = x.reshape(b, f, h // patch, patch, w // patch, patch, c).transpose(0, 1, 2, 4, 6, 5, 3)
    return x.reshape(b, f, h // patch, w // patch, c * patch * patch)


def unpatchify(x: mx.array, patch: int) -> mx.array:
    b, f, h, w, channels = x.shape
    c = channels // (patch * patch)
    x = x.reshape(b, f, h, w, c, patch, patch).transpose(0, 1, 2, 6, 3, 5, 4)
    return x.reshape(b, f, h * patch, w * patch, c)


def _kept(frames: mx.array) -> mx.array:
    """A copy of a few frames to keep past a chunk: evaluated, a slice would still keep its chunk's whole buffer."""
    return mx.contiguous(frames)


class TimeChunks:
    """What lets a decoder run over a video's time axis in consecutive chunks and give, chunk by chunk, the frames of
    one call on the whole video: each convolution keeps the last two frames of its input (time-padded as the whole
    video's would be), each residual the input frames its branch has not caught up with, each time upsampler whether
    it has dropped the video's first frame. A convolution gives one frame fewer than it takes until the last chunk
    (set `last` before it), where it gives one more: no frame is decoded twice, and nothing is blended."""

    def __init__(self) -> None:
        self.last = False
        self._carried: dict[int, mx.array] = {}
        self._queued: dict[int, mx.array] = {}
        self._started: set[int] = set()

    def conv_input(self, conv: nn.Module, x: mx.array, before: int, after: int) -> mx.array:
        """`x` after the frames `conv` kept from the chunks before (or, first, its first frame `before` times), and at
        the end its last frame `after` times; keeps what the next chunk's first outputs need."""
        key = id(conv)
        carried = self._carried.get(key)
        if carried is None:
            if x.shape[1] == 0:  # nothing yet reached this convolution
                return x
            parts = [mx.repeat(x[:, :1], before, axis=1)] if before else []
        else:
            parts = [carried]
        parts.append(x)
        whole = mx.concatenate(parts, axis=1) if len(parts) > 1 else x
        if self.last:
            return mx.concatenate([whole, mx.repeat(whole[:, -1:], after, axis=1)], axis=1) if after else whole
        self._carried[key] = _kept(whole[:, -(conv.kernel - 1) :])
        return whole

    def aligned(self, owner: nn.Module, x: mx.array, frames: int) -> mx.array:
        """The first `frames` of `owner`'s input `x` after those it queued before; the rest is queued."""
        queued = self._queued.get(id(owner))
        if queued is not None and queued.shape[1]:
            x = mx.concatenate([queued, x], axis=1)
        self._queued[id(owner)] = _kept(x[:, frames:])
        return x[:, :frames]

    def kept(self) -> list[mx.array]:
        """The frames kept for the next chunk: evaluate them with the chunk's output (`Pipeline.submit`); left lazy,
        each would hold its convolution's whole input until the next chunk (an H100 decode of 768x512x121 in chunks
        of 6 latent frames peaked at 8.2 GB, untiled 6.5 GB)."""
        return [*self._carried.values(), *self._queued.values()]

    def first_output(self, owner: nn.Module, frames: int) -> bool:
        """Whether `owner`'s output of `frames` frames is its first that has any (the video's first frames)."""
        if frames == 0 or id(owner) in self._started:
            return False
        self._started.add(id(owner))
        return True


class Pipeline:
    """Runs lazily built graphs one at a time, each submitted once the one before has finished.

    The host builds the next graph while the device runs the current one (no idle device while Python traces),
    yet at most one submitted graph holds memory at a time, as with an ``mx.eval`` per graph.
    """

    def __init__(self) -> None:
        self._running: list[mx.array] = []

    def wait(self) -> None:
        """Block until the last submitted graph has finished."""
        if self._running:
            mx.eval(*self._running)  # already submitted: this only waits
            self._running = []

    def submit(self, *arrays: mx.array) -> None:
        """Wait for the running graph, then start computing `arrays` without waiting for them."""
        self.wait()
        mx.async_eval(*arrays)
        self._running = list(arrays)


# ---------------------------------------------------------------------------------------------------
# Layers


def make_norm(channels: int, norm_layer: str, groups: int = 32) -> nn.Module:
    if norm_layer == "group_norm":
        return nn.GroupNorm(groups, channels, eps=1e-6, pytorch_compatible=True)
    return PixelNorm(eps=1e-8)


class CausalConv3d(nn.Module):
    """3x3x3 convolution; time is padded by repeating the first (and, non-causally, last) frame."""

    def __init__(
        self, in_channels: int, out_channels: int, padding_mode: str, stride: tuple[int, int, int] = (1, 1, 1)
    ) -> None:
        super().__init__()
        self.kernel = 3
        self.padding_mode = padding_mode
        self.conv = nn.Conv3d(in_channels, out_channels, 3, stride=stride)

    def __call__(self, x: mx.array, causal: bool = True, time: TimeChunks | None = None) -> mx.array:
        side = (self.kernel - 1) // 2
        before, after = (self.kernel - 1, 0) if causal else (side, side)
        if time is not None:
            x = time.conv_input(self, x, before, after)
            before = after = 0
            if x.shape[1] < self.kernel:  # not enough frames yet for one output frame
                b, _, h, w, _ = x.shape
                return mx.zeros((b, 0, h, w, self.conv.weight.shape[0]), dtype=x.dtype)
        return self.conv(padded_volume(x, before, after, self.kernel // 2, self.padding_mode))


def _modulation(table: mx.array, embedding: mx.array) -> list[mx.array]:
    """Per-sample (shift, scale, ...) vectors shaped to broadcast over (B, F, H, W, C)."""
    rows, channels = table.shape
    values = table[None] + embedding.reshape(-1, rows, channels)
    return [values[:, i, None, None, None, :] for i in range(rows)]


class ResnetBlock3D(nn.Module):
    def __init__(
        self, in_channels: int, out_channels: int, norm_layer: str, padding_mode: str, timestep_conditioning: bool
    ) -> None:
        super().__init__()
        self.norm1 = make_norm(in_channels, norm_layer)
        self.conv1 = CausalConv3d(in_channels, out_channels, padding_mode)
        self.norm2 = make_norm(out_channels, norm_layer)
        self.conv2 = CausalConv3d(out_channels, out_channels, padding_mode)
        if in_channels != out_channels:
            self.norm3 = nn.GroupNorm(1, in_channels, eps=1e-6, pytorch_compatible=True)
            self.conv_shortcut = nn.Conv3d(in_channels, out_channels, 1)
        if timestep_conditioning:
            self.scale_shift_table = mx.zeros((4, in_channels))

    def __call__(
        self, x: mx.array, causal: bool, timestep_embedding: mx.array | None = None, time: TimeChunks | None = None
    ) -> mx.array:
        h = self.norm1(x)
        if "scale_shift_table" in self:
            shift1, scale1, shift2, scale2 = _modulation(self.scale_shift_table, timestep_embedding)
            h = h * (1 + scale1) + shift1
        h = self.conv1(nn.silu(h), causal, time)
        h = self.norm2(h)
        if "scale_shift_table" in self:
            h = h * (1 + scale2) + shift2
        h = self.conv2(nn.silu(h), causal, time)
        if "conv_shortcut" in self:
            x = self.conv_shortcut(self.norm3(x))
        if time is not None:  # the branch lags its input by a frame per convolution
            x = time.aligned(self, x, h.shape[1])
        return x + h


class ResBlockGroup(nn.Module):
    """ltx-core ``UNetMidBlock3D``: residual blocks sharing one timestep embedding."""

    def __init__(
        self, channels: int, num_layers: int, norm_layer: str, padding_mode: str, timestep_conditioning: bool
    ) -> None:
        super().__init__()
        if timestep_conditioning:
            self.time_embedder = TimestepEmbedder(channels * 4)
        block = (channels, channels, norm_layer, padding_mode, timestep_conditioning)
        self.res_blocks = [ResnetBlock3D(*block) for _ in range(num_layers)]

    def __call__(
        self,
        x: mx.array,
        causal: bool,
        timestep: mx.array | None = None,
        pipeline: Pipeline | None = None,
        time: TimeChunks | None = None,
    ) -> mx.array:
        """`pipeline`: where an activation is large, each residual block is submitted on its own (a device holds a
        submission's temporaries until it completes: the last group of an untiled 768x512x121 decode held 11.7 GB
        as one submission on an H100)."""
        embedding = self.time_embedder(timestep.reshape(-1), x.dtype) if "time_embedder" in self else None
        for block in self.res_blocks:
            x = block(x, causal, embedding, time)
            submit_from = SUBMIT_EACH_RESBLOCK_BYTES if time is None else SUBMIT_EACH_RESBLOCK_BYTES_IN_CHUNKS
            if pipeline is not None and x.nbytes >= submit_from and block is not self.res_blocks[-1]:
                pipeline.submit(x, *(time.kept() if time is not None else ()))
        return x


class DepthToSpaceUpsample(nn.Module):
    """Decoder upsampling: conv to p1*p2*p3 times the channels, depth-to-space, drop the first frame."""

    def __init__(
        self, in_channels: int, stride: tuple[int, int, int], residual: bool, reduction: int, padding_mode: str
    ) -> None:
        super().__init__()
        self.stride = stride
        self.residual = residual
        self.repeats = (stride[0] * stride[1] * stride[2]) // reduction
        self.conv = CausalConv3d(in_channels, self.repeats * in_channels, padding_mode)

    def __call__(self, x: mx.array, causal: bool, time: TimeChunks | None = None) -> mx.array:
        out = self.conv(x, causal, time)
        skip = None
        if self.residual:
            source = x if time is None else time.aligned(self, x, out.shape[1])  # the frames `out` has reached
            skip = mx.tile(depth_to_space(source, self.stride), (1, 1, 1, 1, self.repeats))
        x = depth_to_space(out, self.stride)
        if self.stride[0] == 2 and (time is None or time.first_output(self, x.shape[1])):  # the video's first frame
            x = x[:, 1:]
            skip = skip[:, 1:] if skip is not None else None
        return x + skip if skip is not None else x


class SpaceToDepthDownsample(nn.Module):
    """Encoder downsampling: conv + space-to-depth, plus a space-to-depth skip averaged over channel groups."""

    def __init__(self, in_channels: int, out_channels: int, stride: tuple[int, int, int], padding_mode: str) -> None:
        super().__init__()
        self.stride = stride
        volume = stride[0] * stride[1] * stride[2]
        self.group_size = in_channels * volume // out_channels
        self.conv = CausalConv3d(in_channels, out_channels // volume, padding_mode)

    def __call__(self, x: mx.array, causal: bool) -> mx.array:
        if self.stride[0] == 2:
            x = mx.concatenate([x[:, :1], x], axis=1)  # duplicate the first frame
        skip = space_to_depth(x, self.stride)
        skip = skip.reshape(*skip.shape[:-1], -1, self.group_size).mean(axis=-1)
        return space_to_depth(self.conv(x, causal), self.stride) + skip


_STRIDES = {"time": (2, 1, 1), "space": (1, 2, 2), "all": (2, 2, 2)}


# ---------------------------------------------------------------------------------------------------
# Decoder and encoder


class VideoDecoder(nn.Module):
    """Latent (B, C, F', H', W') -> frames (B, 3, 8(F'-1)+1, 32H', 32W'), as ltx-core's ``VideoDecoder``."""

    decode_noise_scale = 0.025
    decode_timestep = 0.05

    def __init__(self, config: VideoVAEConfig) -> None:
        super().__init__()
        self.config = config
        pad, norm, tc = config.decoder_padding, config.norm_layer, config.timestep_conditioning
        self.per_channel_statistics = PerChannelStatistics(config.latent_channels)
        channels = config.decoder_base_channels * 8
        self.conv_in = CausalConv3d(config.latent_channels, channels, pad)
        blocks: list[nn.Module] = []
        for name, params in reversed(config.decoder_blocks):
            multiplier = params.get("multiplier", 2 if name == "res_x_y" else 1)
            if name == "res_x":
                blocks.append(ResBlockGroup(channels, params["num_layers"], norm, pad, tc))
            elif name == "res_x_y":
                blocks.append(ResnetBlock3D(channels, channels // multiplier, norm, pad, False))
                channels //= multiplier
            else:
                stride = _STRIDES[name.removeprefix("compress_")]
                residual = params.get("residual", False) and name == "compress_all"
                blocks.append(DepthToSpaceUpsample(channels, stride, residual, multiplier, pad))
                channels //= multiplier
        self.up_blocks = blocks
        self.conv_norm_out = make_norm(channels, norm)
        self.conv_out = CausalConv3d(channels, config.out_channels * config.patch_size**2, pad)
        if tc:
            self.timestep_scale_multiplier = mx.array(1000.0)
            self.last_time_embedder = TimestepEmbedder(channels * 2)
            self.last_scale_shift_table = mx.zeros((2, channels))

    def decode(
        self,
        latent: mx.array,
        timestep: float | mx.array | None = None,
        noise: mx.array | None = None,
        after_block: Callable[[int, int], None] | None = None,
        pipeline: Pipeline | None = None,
    ) -> mx.array:
        """Channels-last decode: latent (B, F', H', W', C) -> frames (B, F, H, W, 3).

        With timestep conditioning, `noise` (same shape as the latent, standard normal) is blended in at
        ``decode_noise_scale``; pass it explicitly (e.g. from ``mx.random.normal(shape, key=...)``) to make
        the decode reproducible. `after_block(done, total)`, if given, runs after each up block is evaluated
        (progress and cancel checks within one decode: it may raise to stop it); the blocks then run through
        `pipeline` (a caller's, to chain several decodes, or a new one), each traced while the one before runs.
        The returned frames are lazy: without `after_block` nothing has been computed yet.
        """
        x, timestep = self.prepare(latent, timestep, noise)
        if after_block is not None and pipeline is None:
            pipeline = Pipeline()
        blocks = len(self.up_blocks)
        x = self.layer(0, x, timestep)
        for index in range(1, blocks + 1):
            x = self.layer(index, x, timestep, pipeline)
            if after_block is not None:  # block `index` is traced: start it once the one before is done, report that
                pipeline.submit(x)
                if index > 1:
                    after_block(index - 1, blocks)
        x = self.layer(blocks + 1, x, timestep)
        if after_block is not None and blocks:
            pipeline.wait()
            after_block(blocks, blocks)
        return x

    def prepare(
        self, latent: mx.array, timestep: float | mx.array | None = None, noise: mx.array | None = None
    ) -> tuple[mx.array, mx.array | None]:
        """The latent as the first layer takes it (the decode noise blended in, un-normalised) and the scaled
        per-sample timestep (None without timestep conditioning). Per latent cell: a tile or chunk of the result is
        the result of the tile or chunk."""
        if not self.config.timestep_conditioning:
            return self.per_channel_statistics.un_normalize(latent), None
        if noise is None:
            raise ValueError("this decoder injects noise: pass `noise` (standard normal, shaped like the latent)")
        latent = noise.astype(latent.dtype) * self.decode_noise_scale + (1.0 - self.decode_noise_scale) * latent
        if timestep is None:
            timestep = self.decode_timestep
        timestep = mx.broadcast_to(mx.array(timestep, dtype=latent.dtype), (latent.shape[0],))
        timestep = timestep * self.timestep_scale_multiplier.astype(latent.dtype)
        return self.per_channel_statistics.un_normalize(latent), timestep

    @property
    def layer_count(self) -> int:
        """Layers in order: conv_in, the up blocks, the output head (norm, modulation, conv_out, unpatchify)."""
        return len(self.up_blocks) + 2

    def layer(
        self,
        index: int,
        x: mx.array,
        timestep: mx.array | None,
        pipeline: Pipeline | None = None,
        time: TimeChunks | None = None,
    ) -> mx.array:
        """Layer `index` (see `layer_count`) on `x`, `timestep` as `prepare` gives it; `time`: one chunk of the
        video's time axis after those before (`TimeChunks`)."""
        causal = self.config.causal_decoder
        if index == 0:
            return self.conv_in(x, causal, time)
        if index <= len(self.up_blocks):
            block = self.up_blocks[index - 1]
            if isinstance(block, ResBlockGroup):
                return block(x, causal, timestep, pipeline, time)
            if isinstance(block, ResnetBlock3D):
                return block(x, causal, None, time)
            return block(x, causal, time)
        x = self.conv_norm_out(x)
        if timestep is not None:
            shift, scale = _modulation(self.last_scale_shift_table, self.last_time_embedder(timestep, x.dtype))
            x = x * (1 + scale) + shift
        return unpatchify(self.conv_out(nn.silu(x), causal, time), self.config.patch_size)

    def time_segments(self) -> list[range] | None:
        """The layers cut into runs that each start at an upsampler (the first at conv_in), for a decode in time
        chunks (`vae_time_chunks`): within a run, every layer takes a chunk as the one before gives it; between
        runs, the whole video's activation is kept, so that no run lags its input by more than its own layers'
        frames. None where a layer mixes the whole time axis (group norms), which no chunked decode reproduces."""
        if self.config.norm_layer != "pixel_norm" or any("conv_shortcut" in b for b in self.up_blocks):
            return None
        starts = [0] + [i + 1 for i, b in enumerate(self.up_blocks) if isinstance(b, DepthToSpaceUpsample)]
        ends = [*starts[1:], self.layer_count]
        return [range(start, end) for start, end in zip(starts, ends, strict=True) if end > start]

    def segment_shape(self, segment: range) -> tuple[int, int]:
        """(the largest activation of the segment's layers in elements per latent cell, the frames its output lags its
        input, in output frames): a decode in time chunks sizes its chunks by the one and the last by the other. Each
        non-causal convolution gives its output one frame late; an upsampler multiplies the delay by its stride."""
        width = lag = 0
        lag_per_conv = 0 if self.config.causal_decoder else 1
        scale_t, scale_s = self.scale_before(segment.start)
        for index in segment:
            if index == 0:
                lag, channels = lag + lag_per_conv, self.conv_in.conv.weight.shape[0]
            elif index > len(self.up_blocks):  # the output head: its input is the widest
                lag += lag_per_conv
                continue
            else:
                block = self.up_blocks[index - 1]
                if isinstance(block, DepthToSpaceUpsample):
                    t, s, _ = block.stride
                    lag, scale_t, scale_s = (lag + lag_per_conv) * t, scale_t * t, scale_s * s
                    channels = block.conv.conv.weight.shape[0] // (t * s * s)
                else:
                    blocks = block.res_blocks if isinstance(block, ResBlockGroup) else [block]
                    lag += 2 * lag_per_conv * len(blocks)
                    channels = blocks[-1].conv2.conv.weight.shape[0]
            width = max(width, channels * scale_t * scale_s * scale_s)
        return width, lag

    def scale_before(self, index: int) -> tuple[int, int]:
        """(frames, pixels along a side) a latent cell is at the input of layer `index`: the upsamplers' strides
        before it."""
        time = space = 1
        for block in self.up_blocks[: max(0, index - 1)]:
            if isinstance(block, DepthToSpaceUpsample):
                time, space = time * block.stride[0], space * block.stride[1]
        return time, space

    def __call__(
        self, latent: mx.array, timestep: float | mx.array | None = None, noise: mx.array | None = None
    ) -> mx.array:
        """(B, C, F', H', W') -> (B, 3, F, H, W), as ltx-core (noise in the latent's layout)."""
        to_last = (0, 2, 3, 4, 1)
        noise = noise.transpose(to_last) if noise is not None else None
        return self.decode(latent.transpose(to_last), timestep, noise).transpose(0, 4, 1, 2, 3)


class VideoEncoder(nn.Module):
    """Frames (B, 3, 8k+1, H, W) -> normalized latent means (B, C, k+1, H/32, W/32), as ltx-core's ``VideoEncoder``."""

    def __init__(self, config: VideoVAEConfig) -> None:
        super().__init__()
        self.config = config
        pad, norm = config.encoder_padding, config.norm_layer
        self.per_channel_statistics = PerChannelStatistics(config.latent_channels)
        channels = config.latent_channels
        self.conv_in = CausalConv3d(config.in_channels * config.patch_size**2, channels, pad)
        blocks: list[nn.Module] = []
        for name, params in config.encoder_blocks:
            if name == "res_x":
                blocks.append(ResBlockGroup(channels, params["num_layers"], norm, pad, False))
            elif name == "res_x_y":
                out = channels * params.get("multiplier", 2)
                blocks.append(ResnetBlock3D(channels, out, norm, pad, False))
                channels = out
            elif name.endswith("_res"):
                out = channels * params.get("multiplier", 2)
                stride = _STRIDES[name.removeprefix("compress_").removesuffix("_res")]
                blocks.append(SpaceToDepthDownsample(channels, out, stride, pad))
                channels = out
            else:
                out = channels * params.get("multiplier", 2) if name == "compress_all_x_y" else channels
                stride = _STRIDES[name.removeprefix("compress_").removesuffix("_x_y")]
                blocks.append(CausalConv3d(channels, out, pad, stride))
                channels = out
        self.down_blocks = blocks
        self.conv_norm_out = make_norm(channels, norm)
        extra = {"per_channel": config.latent_channels, "uniform": 1, "constant": 1, "none": 0}[config.latent_log_var]
        self.conv_out = CausalConv3d(channels, config.latent_channels + extra, pad)

    def encode(self, frames: mx.array) -> mx.array:
        """Channels-last encode: frames (B, F, H, W, 3) with F = 8k+1 -> latent (B, k+1, H/32, W/32, C)."""
        if (frames.shape[1] - 1) % TIME_SCALE:
            raise ValueError(f"the encoder needs 8k+1 frames, got {frames.shape[1]}")
        x = self.conv_in(patchify(frames, self.config.patch_size))
        for block in self.down_blocks:
            x = block(x, True)
        x = self.conv_out(nn.silu(self.conv_norm_out(x)))
        n = self.config.latent_channels
        means = x[..., :n] if self.config.latent_log_var != "none" else x[..., : x.shape[-1] // 2]
        return self.per_channel_statistics.normalize(means)

    def __call__(self, frames: mx.array) -> mx.array:
        return self.encode(frames.transpose(0, 2, 3, 4, 1)).transpose(0, 4, 1, 2, 3)


def _sanitizer(own: str, other: str):
    def sanitize(key: str) -> str | None:
        if key.startswith(STATS_PREFIX):
            return statistics_key(key)
        if key.startswith(other):
            return None
        return key.removeprefix(own)

    return sanitize


sanitize_decoder_key = _sanitizer("decoder.", "encoder.")
sanitize_encoder_key = _sanitizer("encoder.", "decoder.")
