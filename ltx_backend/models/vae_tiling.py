"""Tiled video decoding that bounds memory.

Space as ltx-core's ``VideoDecoder.tiled_decode``: the latent is cut into overlapping spatial tiles, each decoded on
its own and blended into the output with trapezoidal masks. Time unlike it: ltx-core blends overlapping temporal
tiles too, decoding each overlap twice; here each spatial tile is decoded in consecutive chunks of time that give the
frames of one decode of the whole (`vae_time_chunks`), so a temporal tiling costs no extra voxels and leaves no
seams. Frames come out chunk by chunk in time order, so a caller can stream them to the video encoder instead of
holding the whole video.

generate_av's ``--tiling`` modes name tiles; here each bounds the memory its tiles hold, and the decode does the least
work within that bound (`least_work_within`): often full frames in short time chunks, which decode each voxel once.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import mlx.core as mx

from ltx_backend.models.vae_time_chunks import TimeChunkedDecode
from ltx_backend.models.video_vae import SPACE_SCALE, TIME_SCALE, Pipeline, VideoDecoder

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TilingConfig:
    """Tile sizes in output units (pixels, frames); None disables tiling along that axis. Time is decoded in chunks
    of `temporal_tile_frames` without overlap (`vae_time_chunks`); `temporal_overlap_frames` (generate_av's modes
    name one) is kept for the modes' and specs' sake and no longer decoded."""

    spatial_tile_px: int | None = None
    spatial_overlap_px: int = 0
    temporal_tile_frames: int | None = None
    temporal_overlap_frames: int = 0

    def __post_init__(self) -> None:
        if self.spatial_tile_px is not None:
            if self.spatial_tile_px < 64 or self.spatial_tile_px % 32 or self.spatial_overlap_px % 32:
                raise ValueError("spatial tiles must be >= 64 px and, like their overlap, a multiple of 32")
            if self.spatial_overlap_px >= self.spatial_tile_px:
                raise ValueError("the spatial overlap must be smaller than the tile")
        if self.temporal_tile_frames is not None:
            if self.temporal_tile_frames < 8 or self.temporal_tile_frames % 8 or self.temporal_overlap_frames % 8:
                raise ValueError("temporal tiles must be >= 8 frames and, like their overlap, a multiple of 8")
            if self.temporal_overlap_frames >= self.temporal_tile_frames:
                raise ValueError("the temporal overlap must be smaller than the tile")

    @property
    def spec(self) -> str:
        """``px/overlap/frames/overlap`` (0 px or 0 frames: that axis untiled), as `tiling_for` reads it back."""
        sizes = (self.spatial_tile_px or 0, self.spatial_overlap_px, self.temporal_tile_frames or 0)
        return "/".join(str(n) for n in (*sizes, self.temporal_overlap_frames))

    @classmethod
    def from_spec(cls, spec: str) -> TilingConfig:
        px, px_overlap, frames, frames_overlap = (int(part) for part in spec.split("/"))
        return cls(px or None, px_overlap if px else 0, frames or None, frames_overlap if frames else 0)


# The tiling modes of mlx-video-with-audio's ``--tiling`` (spatial px / overlap, temporal frames / overlap).
TILING_MODES: dict[str, TilingConfig | None] = {
    "none": None,
    "default": TilingConfig(512, 64, 64, 24),
    "aggressive": TilingConfig(256, 64, 32, 8),
    "conservative": TilingConfig(768, 64, 96, 24),
    "spatial": TilingConfig(512, 64),
    "temporal": TilingConfig(None, 0, 64, 24),
}


def generate_av_tiling(mode: str, height: int, width: int, frames: int) -> TilingConfig | None:
    """The tiles of a ``--tiling`` mode as generate_av cuts them for a video size; ``auto`` picks by size as
    generate_av does."""
    if mode != "auto":
        if mode not in TILING_MODES:
            raise ValueError(f"unknown tiling mode {mode!r} (choose from auto, {', '.join(TILING_MODES)})")
        return TILING_MODES[mode]
    spatial, temporal = height > 512 or width > 512, frames > 65
    if not (spatial or temporal):
        return None
    if 3 * frames * height * width * 4 > 2 * 2**30 or (height * width > 786432 and frames > 100):
        return TILING_MODES["aggressive"]
    longest = max(height, width)
    tile_px = 384 if longest > 1024 else 512 if longest > 768 else 384
    tile_frames, overlap_frames = (32, 8) if frames > 200 else (48, 16) if frames > 100 else (64, 24)
    return TilingConfig(
        tile_px if spatial else None,
        64 if spatial else 0,
        tile_frames if temporal else None,
        overlap_frames if temporal else 0,
    )


def tiling_for(mode: str, height: int, width: int, frames: int) -> TilingConfig | None:
    """The tiling a ``--tiling`` mode decodes a video of that size with: the least decode work within the memory of
    the mode's tiles (`least_work_within`). A ``px/overlap/frames/overlap`` spec (``TilingConfig.spec``, what the
    engine's memory-aware auto picks) is decoded as it reads."""
    if "/" in mode:
        return TilingConfig.from_spec(mode)
    tiling = generate_av_tiling(mode, height, width, frames)
    return None if tiling is None else least_work_within(tiling, *latent_cells(height, width, frames))


def latent_cells(height: int, width: int, frames: int) -> tuple[int, int, int]:
    """(frames, height, width) latent cells of a video of `height` x `width` pixels and `frames` frames."""
    return (frames - 1) // TIME_SCALE + 1, height // SPACE_SCALE, width // SPACE_SCALE


@dataclass(frozen=True)
class Intervals:
    starts: list[int]
    ends: list[int]
    left_ramps: list[int]
    right_ramps: list[int]


def split_with_overlaps(length: int, size: int, overlap: int) -> Intervals:
    if length <= size:
        return Intervals([0], [length], [0], [0])
    amount = (length + size - 2 * overlap - 1) // (size - overlap)
    starts = [i * (size - overlap) for i in range(amount)]
    ends = [start + size for start in starts]
    ends[-1] = length
    return Intervals(starts, ends, [0] + [overlap] * (amount - 1), [overlap] * (amount - 1) + [0])


def trapezoid(length: int, ramp_left: int, ramp_right: int) -> mx.array:
    """Linear fade-in / fade-out blend mask of a spatial tile (ltx-core ``compute_trapezoidal_mask_1d``; its
    ``left_starts_from_zero`` served temporal tiles, which are no longer blended)."""
    ramp_left, ramp_right = max(0, min(ramp_left, length)), max(0, min(ramp_right, length))
    mask = mx.ones((length,), dtype=mx.float32)
    if ramp_left > 0:
        fade_in = mx.linspace(0.0, 1.0, ramp_left + 2)[1:-1]
        mask = mx.concatenate([fade_in, mask[ramp_left:]])
    if ramp_right > 0:
        fade_out = mx.linspace(1.0, 0.0, ramp_right + 2)[1:-1]
        mask = mx.concatenate([mask[:-ramp_right], mask[-ramp_right:] * fade_out])
    return mx.clip(mask, 0, 1)


@dataclass(frozen=True)
class AxisTile:
    source: slice  # latent cells
    target: slice  # output frames or pixels
    mask: mx.array | None  # None: no blending along this axis


def _spatial_intervals(length: int, long_side: int, config: TilingConfig) -> Intervals:
    size, overlap = config.spatial_tile_px // SPACE_SCALE, config.spatial_overlap_px // SPACE_SCALE
    tile = max(max(2, overlap + 1), round(size * length / long_side))
    return split_with_overlaps(length, tile, overlap)


def _space_target(start: int, end: int) -> slice:
    """The pixels latent cells [start, end) decode to."""
    return slice(start * SPACE_SCALE, end * SPACE_SCALE)


def _time_target(start: int, end: int) -> slice:
    """The frames latent frames [start, end) give in a decode of the whole (the first latent frame is one frame)."""
    return slice(0 if start == 0 else 1 + (start - 1) * TIME_SCALE, 1 + (end - 1) * TIME_SCALE)


def _spatial_tiles(length: int, long_side: int, config: TilingConfig) -> list[AxisTile]:
    iv = _spatial_intervals(length, long_side, config)
    return [
        AxisTile(
            slice(s, e),
            _space_target(s, e),
            trapezoid((e - s) * SPACE_SCALE, left * SPACE_SCALE, right * SPACE_SCALE),
        )
        for s, e, left, right in zip(iv.starts, iv.ends, iv.left_ramps, iv.right_ramps, strict=True)
    ]


# Temporal tiles from this size are decoded in chunks one latent frame shorter: room for what a decode in time chunks
# keeps beside a call (H100, 768x512x121, peak against the blended tiles of the same mode, same machine: 512/64 tiles
# in 64-frame chunks 3.65 GB, in 56-frame ones 3.45 GB, blended 3.53 GB; 384/64 in 48 / 40 / blended: 3.47 / 2.86 /
# 3.33 GB). Below it (aggressive's 32 frames: 2.57 GB, blended 2.62 GB) a shorter chunk costs more calls than it saves.
SHORTER_CHUNKS_FROM_FRAMES = 48
# Longer chunks gain little time and cost more memory than their share of the whole decode: a chunk holds about two
# activations more than a whole decode does (the carried frames' and the residuals' concatenations). H100, 768x512x121:
# full frames in 40-frame chunks 0.259 s, 4.71 GB; 56-frame (`temporal`) 0.248 s, 4.80 GB; 88-frame (`conservative`
# until this cap) 0.242-0.256 s, 7.2-8.7 GB in three runs, above the untiled decode's 6.48 GB.
LONGEST_CHUNK_FRAMES = 56


def _time_chunks(length: int, config: TilingConfig) -> list[AxisTile]:
    """Consecutive chunks along `length` latent frames, no overlap, of `temporal_tile_frames` (one latent frame less
    from ``SHORTER_CHUNKS_FROM_FRAMES``, at most ``LONGEST_CHUNK_FRAMES``); the decode may split its last chunk once
    more, so that it has room for the frames the decoder delayed (`vae_time_chunks`)."""
    frames = config.temporal_tile_frames
    frames = min(LONGEST_CHUNK_FRAMES, frames - TIME_SCALE if frames >= SHORTER_CHUNKS_FROM_FRAMES else frames)
    size = max(1, frames // TIME_SCALE)
    return [
        AxisTile(slice(s, min(s + size, length)), _time_target(s, min(s + size, length)), None)
        for s in range(0, length, size)
    ]


def _whole(length: int, target: Callable[[int, int], slice]) -> list[AxisTile]:
    """One untiled span of `length` latent cells along an axis (`target`: ``_time_target`` or ``_space_target``)."""
    return [AxisTile(slice(0, length), target(0, length), None)]


@dataclass(frozen=True)
class TileLayout:
    """The tiles of one decode: temporal windows in order, and the rows and columns of every window."""

    times: list[AxisTile]
    rows: list[AxisTile]
    cols: list[AxisTile]

    @property
    def count(self) -> int:
        return len(self.times) * len(self.rows) * len(self.cols)

    @property
    def largest(self) -> tuple[int, int, int]:
        """(frames, height, width) in output pixels of the largest tile: a time chunk's frames, a spatial tile's."""
        return _extent(self.times), _extent(self.rows), _extent(self.cols)

    def voxels(self) -> int:
        """Output voxels (frames x pixels) the tiles decode in all, overlaps counted as often as decoded."""

        def total(tiles: list[AxisTile]) -> int:
            return sum(_length(tile.target) for tile in tiles)

        return total(self.times) * total(self.rows) * total(self.cols)


def _length(span: slice) -> int:
    return span.stop - span.start


def _extent(tiles: list[AxisTile]) -> int:
    return max(_length(tile.target) for tile in tiles)


def tile_layout(frames: int, height: int, width: int, tiling: TilingConfig | None) -> TileLayout:
    """The tile layout of a latent of `frames` x `height` x `width` cells (one whole tile without tiling)."""
    if tiling is None:
        return TileLayout(_whole(frames, _time_target), _whole(height, _space_target), _whole(width, _space_target))
    long_side = max(height, width)
    spatial = tiling.spatial_tile_px is not None
    rows = _spatial_tiles(height, long_side, tiling) if spatial else _whole(height, _space_target)
    cols = _spatial_tiles(width, long_side, tiling) if spatial else _whole(width, _space_target)
    temporal = tiling.temporal_tile_frames is not None
    times = _time_chunks(frames, tiling) if temporal else _whole(frames, _time_target)
    return TileLayout(times, rows, cols)


# What one decoder call costs beyond its voxels, in voxels of an untiled decode: a tile took ~15 ms more than its
# voxels' share of the untiled 768x512x121 decode (47.6 M voxels in 0.19 s) in every tiling mode (H100, MLX 0.32.4,
# benchmarks/vae_decode.py, 2026-12-05).
TILE_COST_VOXELS = 3_700_000
SPATIAL_OVERLAP_PX = 64  # the least-work tilings' overlaps: those of ltx-core's default tiling
MIN_SPATIAL_TILE_PX = 256  # aggressive's tiles: smaller ones add more overlap than room
MIN_TEMPORAL_TILE_FRAMES = 8  # time chunks add no voxels: one latent frame a chunk
# A decode in time chunks keeps each tile's input to the last decoder segment whole: 8 bytes per output voxel decoded
# (LTX-2.3: 256 bf16 channels at 1/64 of the pixels; 2.0: half that), against ~226 bytes of a call's working memory
# per voxel (`pipeline.memory.VAE_BYTES_PER_VOXEL`): memory in units of a call's voxels.
KEPT_VOXEL_SHARE = 8.0 / 226.0


def decode_work(frames: int, height: int, width: int, tiling: TilingConfig | None) -> tuple[int, int, int]:
    """(output voxels decoded in all, overlaps counted each time; decoder calls, one a tile and time chunk; the most
    voxels one call gives, `TileLayout.largest`) for a latent of `frames` x `height` x `width` cells. Arithmetic
    only: no masks are made."""
    long_side = max(height, width)

    def spatial(length: int) -> list[int]:
        if tiling is None or tiling.spatial_tile_px is None:
            return [_length(_space_target(0, length))]
        iv = _spatial_intervals(length, long_side, tiling)
        return [_length(_space_target(s, e)) for s, e in zip(iv.starts, iv.ends, strict=True)]

    if tiling is None or tiling.temporal_tile_frames is None:
        times = [_length(_time_target(0, frames))]
    else:
        times = [_length(chunk.target) for chunk in _time_chunks(frames, tiling)]
    rows, cols = spatial(height), spatial(width)
    largest = max(times) * max(rows) * max(cols)
    return sum(times) * sum(rows) * sum(cols), len(times) * len(rows) * len(cols), largest


def least_work_tiling(frames: int, height: int, width: int, max_tile_voxels: float) -> TilingConfig | None:
    """The tiling of a latent of `frames` x `height` x `width` cells that decodes the fewest voxels, each call costing
    ``TILE_COST_VOXELS`` more, whose memory (`decode_memory`: its largest call's voxels and what it keeps between
    segments) is within `max_tile_voxels`; None if no tiling's tiles are that small.

    Spatial tiles from 256 px and time chunks from 8 frames up, in steps of 64 px and 8 frames. generate_av's
    size rule tiled a 768x512x121 video into 36 tiles decoding 2.07x its voxels where memory had room for 2 tiles
    decoding 1.1x."""
    long_px, out_frames = max(height, width) * SPACE_SCALE, 1 + (frames - 1) * TIME_SCALE
    spatial = [None, *range(MIN_SPATIAL_TILE_PX, long_px, 64)]
    temporal = [None, *range(MIN_TEMPORAL_TILE_FRAMES, out_frames - 1, TIME_SCALE)]
    best: tuple[tuple[int, int, int], TilingConfig] | None = None
    for px, tile_frames in itertools.product(spatial, temporal):
        if px is None and tile_frames is None:
            continue
        tiling = TilingConfig(px, SPATIAL_OVERLAP_PX if px else 0, tile_frames, 0)
        work = decode_work(frames, height, width, tiling)
        cost = _work_cost(work)
        if _memory(work, tiling) <= max_tile_voxels and (best is None or cost < best[0]):
            best = (cost, tiling)
    return None if best is None else best[1]


# A named mode bounds the decode's memory, not its tiles' shape: generate_av's small tiles decode up to 1.9x the
# voxels, and small calls cost more per voxel, where full frames (or larger tiles) in short time chunks fit in the
# same memory. A plan replaces the mode's tiles where its estimated memory is at most this share of theirs: the
# estimate ranks plans of different shapes only roughly (H100, 768x512x121, LTX-2.0: full frames in 24-frame chunks,
# estimated at 92% of `default`'s tiles, peaked 4% above them, 3.58 against 3.45 GB; 16-frame chunks, at 66%, 12%
# below, 3.03 GB, in 0.29 s against 0.41 s).
MODE_MEMORY_SHARE = 0.8


def decode_memory(frames: int, height: int, width: int, tiling: TilingConfig | None) -> float:
    """What a decode of a latent of `frames` x `height` x `width` cells holds beyond the decoder, in call voxels: its
    largest call's voxels, and what a decode in time chunks keeps of every voxel it decodes (``KEPT_VOXEL_SHARE``)."""
    return _memory(decode_work(frames, height, width, tiling), tiling)


def _memory(work: tuple[int, int, int], tiling: TilingConfig | None) -> float:
    voxels, _, largest = work
    return largest + (0.0 if tiling is None else KEPT_VOXEL_SHARE * voxels)


def least_work_within(tiling: TilingConfig, frames: int, height: int, width: int) -> TilingConfig | None:
    """`tiling`, or the tiling with less decode work (`least_work_tiling`; None: untiled) estimated to hold at most
    ``MODE_MEMORY_SHARE`` of its memory (`decode_memory`) for a latent of `frames` x `height` x `width` cells."""
    work = decode_work(frames, height, width, tiling)
    budget = MODE_MEMORY_SHARE * _memory(work, tiling)
    if decode_memory(frames, height, width, None) <= budget:
        return None
    better = least_work_tiling(frames, height, width, budget)
    if better is None or _work_cost(decode_work(frames, height, width, better)) >= _work_cost(work):
        return tiling
    return better


def _work_cost(work: tuple[int, int, int]) -> tuple[int, int, int]:
    """What `decode_work`'s (voxels, calls, largest call) costs in time: voxels, each call ``TILE_COST_VOXELS`` more;
    at equal work, fewer calls, then less memory."""
    voxels, tiles, largest = work
    return voxels + tiles * TILE_COST_VOXELS, tiles, largest


def spatial_batches(frames: int, layout: TileLayout, max_voxels: int) -> list[list[tuple[AxisTile, AxisTile]]]:
    """The (row, col) tiles of a layout, in row-major order, cut into decoder calls of `frames` frames: runs of
    same-shape tiles whose output voxels stay within `max_voxels`. Consecutive runs keep the order the tiles are
    blended in (and so the float sums of the overlaps) that of one call per tile."""
    batches: list[list[tuple[AxisTile, AxisTile]]] = []
    shape = None
    for row, col in itertools.product(layout.rows, layout.cols):
        tile_shape = (_length(row.target), _length(col.target))
        voxels = frames * tile_shape[0] * tile_shape[1]
        if tile_shape == shape and (len(batches[-1]) + 1) * voxels <= max_voxels:
            batches[-1].append((row, col))
        else:
            batches.append([(row, col)])
            shape = tile_shape
    return batches


def decode_tiled(
    decoder: VideoDecoder,
    latent: mx.array,
    tiling: TilingConfig | None,
    timestep: float | None = None,
    noise: mx.array | None = None,
    progress: Callable[[float], None] | None = None,
    batch_voxels: int | None = None,
) -> Iterator[mx.array]:
    """Decode a channels-last latent (B, F', H', W', C) into frame chunks (B, t, H, W, 3), float32, in order.

    Without tiling the whole video is one chunk. With a temporal tiling, each spatial tile is decoded in chunks of
    time (`vae_time_chunks`) and the chunks are given as they are decoded: their frames are those of a decode of the
    whole time axis. `noise` (decoders with timestep conditioning) is given for the whole latent and sliced per tile,
    so a tiled decode is as reproducible as a direct one. `progress(fraction)` runs after every decoder call (untiled:
    after every up block), so a caller can report progress and cancel within one call; it may raise to stop the
    decode.

    Tiles of one shape go through the decoder together (batched) while their output voxels stay within
    `batch_voxels` (default: the largest call's, so the peak memory stays that of the largest tile, as the memory
    planner estimates). Calls run one at a time through a `Pipeline`, each traced while the device runs the one
    before, so the device does not sit idle while Python traces the next call, and the peak stays that of one call.
    """
    if tiling is None:
        hooks = {} if progress is None else {"after_block": lambda block, blocks: progress(block / blocks)}
        frames = decoder.decode(latent, timestep, noise, **hooks).astype(mx.float32)
        mx.eval(frames)
        yield frames
        return
    batch, f, h, w, _ = latent.shape
    layout = tile_layout(f, h, w, tiling)
    largest = layout.largest
    groups = spatial_batches(largest[0], layout, batch_voxels or largest[0] * largest[1] * largest[2])
    chunk = layout.times[0].source.stop  # latent frames a time chunk
    pipeline = Pipeline()
    calls, done = [], 0

    def on_call() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done / sum(calls))

    decodes = []
    for group in groups:
        index = [(slice(None), slice(None), row.source, col.source) for row, col in group]
        tile_latent = _stack([latent[i] for i in index])
        tile_noise = _stack([noise[i] for i in index]) if noise is not None else None
        tile = _TileDecode(decoder, tile_latent, chunk, _repeat(timestep, len(group)), tile_noise, pipeline, on_call)
        calls.append(tile.calls)
        decodes.append(tile.frames())
    if len(layout.rows) * len(layout.cols) == 1:
        for frames in decodes[0]:
            frames = frames.astype(mx.float32)
            pipeline.submit(frames)
            yield frames
        return
    masks = {(id(row), id(col)): _blend_mask(row, col) for row, col in itertools.product(layout.rows, layout.cols)}
    weights = mx.zeros((1, 1, h * SPACE_SCALE, w * SPACE_SCALE, 1), dtype=mx.float32)
    for row, col in itertools.product(layout.rows, layout.cols):
        target = (slice(None), slice(None), row.target, col.target)
        weights[target] = weights[target] + masks[id(row), id(col)]
    weights = mx.maximum(weights, 1e-8)
    while True:  # every tile's chunks have the same frames: blend each as it comes, then let it go
        buffer = None
        for group, frames in zip(groups, decodes, strict=True):
            decoded = next(frames, None)
            if decoded is None:
                return
            if buffer is None:
                buffer = mx.zeros((batch, decoded.shape[1], h * SPACE_SCALE, w * SPACE_SCALE, 3), dtype=mx.float32)
            decoded = decoded.astype(mx.float32)
            for i, (row, col) in enumerate(group):
                target = (slice(None), slice(None), row.target, col.target)
                buffer[target] = buffer[target] + decoded[i * batch : (i + 1) * batch] * masks[id(row), id(col)]
            pipeline.submit(buffer)  # updated in place: one call's blend per graph
            del decoded
        frames = buffer / weights
        pipeline.submit(frames)
        yield frames  # submitted: what the caller does with it queues right behind it


class _TileDecode:
    """One decoder input's frames: in time chunks where the decoder allows (`TimeChunkedDecode`), else whole."""

    def __init__(self, decoder, latent, chunk, timestep, noise, pipeline: Pipeline, on_call) -> None:
        self._whole = (decoder, latent, timestep, noise, pipeline, on_call)
        self._chunked = None
        segments = getattr(decoder, "time_segments", lambda: None)()  # a decoder stand-in may lack them
        if segments is not None:
            self._chunked = TimeChunkedDecode(decoder, latent, chunk, timestep, noise, pipeline, on_call)
        elif chunk < latent.shape[1]:
            log.warning("this decoder mixes the whole time axis (group norms): it decodes the video's time whole")
        self.calls = self._chunked.calls() if self._chunked is not None else 1

    def frames(self) -> Iterator[mx.array]:
        if self._chunked is not None:
            yield from self._chunked.frames()
            return
        decoder, latent, timestep, noise, pipeline, on_call = self._whole
        frames = [decoder.decode(latent, timestep, noise)]
        pipeline.submit(frames[0])
        on_call()
        yield frames.pop()  # suspended, the generator keeps no frames alive


def _stack(parts: list[mx.array]) -> mx.array:
    return parts[0] if len(parts) == 1 else mx.concatenate(parts, axis=0)


def _repeat(timestep: float | mx.array | None, times: int) -> float | mx.array | None:
    """A per-sample timestep for `times` tiles stacked along the batch."""
    if isinstance(timestep, mx.array) and timestep.size > 1 and times > 1:
        return mx.concatenate([timestep.reshape(-1)] * times)
    return timestep


def _blend_mask(row: AxisTile, col: AxisTile) -> mx.array:
    """Separable (1, 1, h, w, 1) blend mask of one spatial tile."""
    mask = mx.ones((1, 1, 1, 1, 1), dtype=mx.float32)
    if row.mask is not None:
        mask = mask * row.mask[None, None, :, None, None]
    if col.mask is not None:
        mask = mask * col.mask[None, None, None, :, None]
    return mask
