"""Tiled video decoding: modes, exact stitching, time chunks, streaming, and lower peak memory.

The parity of our tiled decode with ltx-core's own spatial tiling is in test_video_parity.py. Here the spatial
stitching itself is checked exactly: with a decoder that maps each latent cell to its own block of pixels (no
receptive field), every spatial tiling must reproduce the untiled decode to float rounding, whatever the tile sizes.
Time is decoded in chunks that give the frames of one decode of the whole: checked on the tiny real decoders.
"""

from __future__ import annotations

import functools
from dataclasses import replace
from pathlib import Path

import mlx.core as mx
import pytest

from ltx_backend.models.vae_tiling import (
    LONGEST_CHUNK_FRAMES,
    MODE_MEMORY_SHARE,
    TILE_COST_VOXELS,
    TILING_MODES,
    TilingConfig,
    _blend_mask,
    decode_memory,
    decode_tiled,
    decode_work,
    generate_av_tiling,
    least_work_tiling,
    spatial_batches,
    tile_layout,
    tiling_for,
)
from ltx_backend.models.vae_time_chunks import TimeChunkedDecode, chunk_sizes
from ltx_backend.models.video_vae import (
    LTX2_VAE_SECTION,
    LTX23_VAE_SECTION,
    SPACE_SCALE,
    TIME_SCALE,
    VideoDecoder,
    VideoVAEConfig,
)
from ltx_backend.weights.checkpoint import open_checkpoint
from ltx_backend.weights.video import load_video_decoder

FIXTURES = Path(__file__).parent / "fixtures" / "video"
STITCH_TOLERANCE = 1e-5  # blending weights are normalised: a local decoder must come out unchanged


class LocalDecoder:
    """Decodes each latent cell into its own 8-frame (1 for the first), 32x32-pixel block: no receptive field."""

    def decode(self, latent: mx.array, timestep=None, noise=None) -> mx.array:
        rgb = latent[..., :3] * 0.5
        frames = mx.concatenate([rgb[:, :1], mx.repeat(rgb[:, 1:], TIME_SCALE, axis=1)], axis=1)
        return mx.repeat(mx.repeat(frames, SPACE_SCALE, axis=2), SPACE_SCALE, axis=3)


@pytest.mark.parametrize(
    "tiling",
    [
        TilingConfig(64, 32),
        TilingConfig(96, 32),
        TilingConfig(None, 0, 16, 8),
        TilingConfig(None, 0, 24, 8),
        TilingConfig(64, 32, 24, 16),
        TilingConfig(128, 64, 32, 8),
        TILING_MODES["aggressive"],
    ],
)
def test_tiled_stitching_reproduces_untiled_exactly(tiling: TilingConfig) -> None:
    latent = mx.random.normal((1, 7, 5, 9, 4), key=mx.random.key(3))
    untiled = next(decode_tiled(LocalDecoder(), latent, None))
    chunks = list(decode_tiled(LocalDecoder(), latent, tiling))
    tiled = mx.concatenate(chunks, axis=1)
    assert tiled.shape == untiled.shape == (1, 49, 160, 288, 3)
    assert float(mx.abs(tiled - untiled).max()) <= STITCH_TOLERANCE


@pytest.mark.parametrize("fixture", ["v20_official", "v20tc_official", "v23_split"])
@pytest.mark.parametrize("causal", [False, True])
def test_time_chunks_give_the_frames_of_one_whole_decode(fixture: str, causal: bool) -> None:
    """Each convolution carries its input's last frames into the next chunk: whatever the chunk size, the frames
    are those of one decode of the whole latent (fp32, CPU: to the bit, asserted to float rounding), given in
    order, in as many calls as `calls()` says (LTX-2.0's residual upsamplers, 2.3's space/time ones, timestep
    conditioning with its noise, causal and not)."""
    decoder = load_video_decoder(open_checkpoint(FIXTURES / fixture), mx.float32)
    decoder.config = replace(decoder.config, causal_decoder=causal)
    conditioned = decoder.config.timestep_conditioning
    latent = mx.random.normal((2, 6, 3, 4, decoder.config.latent_channels), key=mx.random.key(6))
    noise = mx.random.normal(latent.shape, key=mx.random.key(9)) if conditioned else None
    timestep = 0.07 if conditioned else None
    whole = decoder.decode(latent, timestep, noise)
    for chunk in (1, 2, 4, 6):
        calls: list[int] = []
        decode = TimeChunkedDecode(decoder, latent, chunk, timestep, noise, on_call=functools.partial(calls.append, 1))
        parts = list(decode.frames())
        assert all(part.shape[1] for part in parts) and (len(parts) > 1) == (chunk < 6)
        frames = mx.concatenate(parts, axis=1)
        assert frames.shape == whole.shape == (2, 41, 96, 128, 3)
        assert float(mx.abs(frames - whole).max()) <= 1e-6 * float(mx.abs(whole).max()), chunk
        assert len(calls) == decode.calls()


@pytest.mark.parametrize("section", [LTX2_VAE_SECTION, LTX23_VAE_SECTION], ids=["2.0", "2.3"])
def test_real_decoders_give_no_more_than_a_chunk_a_call(section: dict) -> None:
    """The real decoders' layouts (at 1/32 of their width), in chunks of 2 latent frames: the last segment's last
    chunk leaves room for the frames it delayed (13 on 2.0, 10 on 2.3), so no call gives more than a chunk's 16
    frames, what the memory planner counts a call for."""
    decoder = VideoDecoder(VideoVAEConfig.from_config({"vae": {**section, "decoder_base_channels": 4}}))
    latent = mx.random.normal((1, 6, 2, 2, 128), key=mx.random.key(0))  # reflect padding needs 2 cells
    whole = decoder.decode(latent)
    parts = list(TimeChunkedDecode(decoder, latent, 2).frames())
    sizes = [part.shape[1] for part in parts]
    assert sum(sizes) == 41 and max(sizes) <= 2 * TIME_SCALE and len(sizes) >= 3, sizes
    assert float(mx.abs(mx.concatenate(parts, axis=1) - whole).max()) <= 1e-6 * float(mx.abs(whole).max())


def test_chunk_sizes_leave_the_last_call_room_for_the_delay() -> None:
    assert chunk_sizes(21, 8, 1) == [8, 8, 4, 1]
    assert chunk_sizes(16, 8, 6) == [8, 2, 6]
    assert chunk_sizes(5, 8, 6) == [5]
    assert chunk_sizes(16, 4, 0) == [4, 4, 4, 3, 1]  # a last chunk has at least a frame


def test_time_chunks_refuse_a_decoder_that_mixes_time() -> None:
    """Group norms normalise over the whole time axis: no chunked decode reproduces them. The chunked decode refuses
    such a decoder; a tiled decode then decodes each tile's time whole."""
    decoder = load_video_decoder(open_checkpoint(FIXTURES / "v23_split"), mx.float32)
    decoder.config = replace(decoder.config, norm_layer="group_norm")
    latent = mx.random.normal((1, 4, 2, 2, 8), key=mx.random.key(2))
    with pytest.raises(ValueError, match="whole time axis"):
        TimeChunkedDecode(decoder, latent, 2)
    chunks = list(decode_tiled(decoder, latent, TilingConfig(None, 0, 16, 8)))
    assert len(chunks) == 1 and mx.array_equal(chunks[0], decoder.decode(latent).astype(mx.float32))


def test_random_weight_decoder_tiling_error_is_bounded() -> None:
    """Real decoders see a few latents around each cell; random tiny ones are far less local. Tiles overlapping
    by 2 latents must still agree with the direct decode on average (measured: mean 8.6% of peak)."""
    decoder = load_video_decoder(open_checkpoint(FIXTURES / "v23_split"), mx.float32)
    latent = mx.random.normal((1, 4, 6, 6, 8), key=mx.random.key(0))
    untiled = next(decode_tiled(decoder, latent, None))
    tiled = mx.concatenate(list(decode_tiled(decoder, latent, TilingConfig(128, 64, 16, 8))), axis=1)
    error = mx.abs(tiled - untiled)
    peak = float(mx.abs(untiled).max())
    assert float(error.mean()) / peak < 0.15
    assert float(error.max()) / peak < 1.0


def tile_by_tile(decoder, latent: mx.array, tiling: TilingConfig, noise: mx.array | None = None) -> mx.array:
    """The plain tiled decode (one decoder call per spatial tile over the whole time axis, blended and evaluated
    before the next; ltx-core's order): the reference the batched, pipelined, time-chunked `decode_tiled` must
    reproduce."""
    layout = tile_layout(*latent.shape[1:4], tiling)
    frames = (latent.shape[1] - 1) * TIME_SCALE + 1
    shape = (latent.shape[0], frames, latent.shape[2] * SPACE_SCALE, latent.shape[3] * SPACE_SCALE)
    buffer, weights = mx.zeros((*shape, 3)), mx.zeros((1, 1, *shape[2:], 1))
    for row in layout.rows:
        for col in layout.cols:
            index = (slice(None), slice(None), row.source, col.source)
            decoded = decoder.decode(latent[index], None, None if noise is None else noise[index])
            mask = _blend_mask(row, col)
            target = (slice(None), slice(None), row.target, col.target)
            buffer[target] = buffer[target] + decoded.astype(mx.float32) * mask
            weights[target] = weights[target] + mask
            mx.eval(buffer, weights)
    return buffer / mx.maximum(weights, 1e-8)


def tiny_decoder():
    return load_video_decoder(open_checkpoint(FIXTURES / "v23_split"), mx.float32)


@pytest.mark.parametrize(
    "tiling",
    [TilingConfig(64, 32, 16, 8), TilingConfig(96, 32, 24, 8), TilingConfig(None, 0, 16, 8), TilingConfig(64, 32)],
)
@pytest.mark.parametrize("progress", [False, True])
def test_pipelined_decode_is_the_tile_by_tile_decode_bit_for_bit(tiling: TilingConfig, progress: bool) -> None:
    """fp32 on the CPU: the pipelined decode (each call traced while the one before runs, evaluated asynchronously,
    time in chunks) gives the same bytes as the tile-by-tile loop over the whole time axis."""
    decoder = tiny_decoder()
    latent = mx.random.normal((1, 5, 5, 6, 8), key=mx.random.key(4))
    noise = mx.random.normal(latent.shape, key=mx.random.key(5))
    expected = tile_by_tile(decoder, latent, tiling, noise)
    hooks = {"progress": lambda fraction: None} if progress else {}
    chunks = list(decode_tiled(decoder, latent, tiling, noise=noise, **hooks))
    assert mx.array_equal(mx.concatenate(chunks, axis=1), expected)


def test_batched_tiles_are_the_tile_by_tile_decode_bit_for_bit() -> None:
    """Same-shape tiles stacked along the batch through one decoder call, blended in the same order: the same bytes
    as one call per tile (fp32, CPU)."""
    decoder = tiny_decoder()
    latent = mx.random.normal((1, 4, 5, 9, 8), key=mx.random.key(6))
    noise = mx.random.normal(latent.shape, key=mx.random.key(7))
    tiling = TilingConfig(96, 32, 16, 8)  # 4 rows x 4 columns of 2x3 latents
    layout = tile_layout(4, 5, 9, tiling)
    assert [len(batch) for batch in spatial_batches(25, layout, 10**9)] == [16]
    assert [len(batch) for batch in spatial_batches(25, layout, 2 * 25 * 64 * 96)] == [2] * 8
    expected = tile_by_tile(decoder, latent, tiling, noise)
    for batch_voxels in (10**9, 2 * 25 * 64 * 96):
        chunks = list(decode_tiled(decoder, latent, tiling, noise=noise, batch_voxels=batch_voxels))
        assert len(chunks) > 1  # still streamed chunk by chunk
        assert mx.array_equal(mx.concatenate(chunks, axis=1), expected), batch_voxels


def test_default_batches_stay_within_the_largest_tile() -> None:
    """Without `batch_voxels`, a decoder call never holds more output voxels than the largest tile (the memory
    planner's unit), so batching never raises the peak the planner estimates."""
    for shape in ((16, 16, 24), (16, 24, 40), (8, 9, 9)):
        for mode in ("aggressive", "default", "auto", "spatial"):
            tiling = tiling_for(mode, shape[1] * 32, shape[2] * 32, (shape[0] - 1) * 8 + 1)
            if tiling is None:
                continue
            layout = tile_layout(*shape, tiling)
            t, h, w = layout.largest
            for batch in spatial_batches(t, layout, t * h * w):
                voxels = sum(t * (r.target.stop - r.target.start) * (c.target.stop - c.target.start) for r, c in batch)
                assert voxels <= t * h * w


def test_tiled_decode_lowers_peak_memory() -> None:
    decoder = load_video_decoder(open_checkpoint(FIXTURES / "v23_split"), mx.float32)
    latent = mx.random.normal((1, 4, 6, 6, 8), key=mx.random.key(1))
    mx.eval(latent)
    peaks = {}
    for name, tiling in (("untiled", None), ("tiled", TilingConfig(64, 32, 16, 8))):
        mx.clear_cache()
        mx.reset_peak_memory()
        for _ in decode_tiled(decoder, latent, tiling):
            pass
        peaks[name] = mx.get_peak_memory()
    assert peaks["tiled"] < 0.6 * peaks["untiled"], peaks


@pytest.mark.parametrize(
    ("height", "width", "frames", "expected"),
    [  # the examples of mlx-video-with-audio's TilingConfig.auto
        (512, 512, 65, None),
        (768, 512, 121, TilingConfig(384, 64, 48, 16)),
        (768, 768, 65, TilingConfig(384, 64)),
        (1024, 576, 97, TilingConfig(512, 64, 64, 24)),
        (1280, 704, 121, TILING_MODES["aggressive"]),
        (512, 512, 257, TilingConfig(None, 0, 32, 8)),
    ],
)
def test_auto_tiling_follows_generate_av(height: int, width: int, frames: int, expected) -> None:
    assert generate_av_tiling("auto", height, width, frames) == expected


def test_named_modes_and_validation() -> None:
    assert tiling_for("none", 2048, 2048, 481) is None
    assert tiling_for("conservative", 64, 64, 9) == TilingConfig(768, 64, 96, 24)
    assert tiling_for("spatial", 64, 64, 9).temporal_tile_frames is None
    with pytest.raises(ValueError, match="unknown tiling mode"):
        tiling_for("huge", 64, 64, 9)
    for bad in ((48, 0, None, 0), (100, 0, None, 0), (64, 64, None, 0), (None, 0, 12, 0), (None, 0, 16, 16)):
        with pytest.raises(ValueError):
            TilingConfig(*bad)


@pytest.mark.parametrize("mode", ["none", "auto", "default", "aggressive", "conservative", "spatial", "temporal"])
def test_decode_work_counts_the_layouts_tiles(mode: str) -> None:
    """The arithmetic the planner searches with agrees with the layout the decode runs (768x512x121)."""
    latent = (16, 16, 24)
    tiling = tiling_for(mode, 512, 768, 121)
    layout = tile_layout(*latent, tiling)
    frames, height, width = layout.largest
    assert decode_work(*latent, tiling) == (layout.voxels(), layout.count, frames * height * width)


SIZES = [(512, 768, 121), (704, 1280, 121), (1088, 1920, 121), (512, 512, 257), (128, 128, 49)]


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("mode", ["auto", "default", "aggressive", "conservative", "spatial", "temporal"])
def test_a_named_mode_decodes_the_least_work_within_its_tiles_memory(mode: str, size: tuple[int, int, int]) -> None:
    """A mode's tiles give way to a plan with less decode work only where that plan is estimated at no more than
    MODE_MEMORY_SHARE of their memory; a ``px/overlap/frames/overlap`` spec is decoded as it reads."""
    height, width, frames = size
    latent = ((frames - 1) // TIME_SCALE + 1, height // SPACE_SCALE, width // SPACE_SCALE)
    tiles = generate_av_tiling(mode, height, width, frames)
    if tiles is None:
        assert tiling_for(mode, height, width, frames) is None
        return
    plan = tiling_for(mode, height, width, frames)
    assert tiling_for(tiles.spec, height, width, frames) == tiles
    if plan != tiles:
        assert decode_memory(*latent, plan) <= MODE_MEMORY_SHARE * decode_memory(*latent, tiles)
        (voxels, calls, _), (tile_voxels, tile_calls, _) = decode_work(*latent, plan), decode_work(*latent, tiles)
        assert voxels + calls * TILE_COST_VOXELS < tile_voxels + tile_calls * TILE_COST_VOXELS


def test_the_modes_of_a_768x512x121_video() -> None:
    """What each mode decodes 768x512x121 with (H100: every one but `aggressive` within 1.6x the untiled time, in
    less memory than its tiles): full frames in time chunks where they fit, `aggressive` larger tiles in shorter
    chunks (1.22x the voxels instead of 1.88x)."""
    plans = {mode: tiling_for(mode, 512, 768, 121).spec for mode in ("auto", "default", "aggressive", "spatial")}
    assert plans == {"auto": "0/0/8/0", "default": "0/0/16/0", "aggressive": "448/64/8/0", "spatial": "0/0/32/0"}
    for mode in ("conservative", "temporal"):  # one tile across, in chunks of at most LONGEST_CHUNK_FRAMES
        layout = tile_layout(16, 16, 24, tiling_for(mode, 512, 768, 121))
        assert layout.largest == (LONGEST_CHUNK_FRAMES, 512, 768) and len(layout.times) == 3


def test_least_work_tiling_fits_and_beats_generate_avs_tiles() -> None:
    latent = (16, 16, 24)  # 768x512x121
    untiled = decode_work(*latent, None)[0]
    generate_av = generate_av_tiling("auto", 512, 768, 121)  # 36 calls, 1.46x the voxels
    calls = decode_work(*latent, generate_av)[1]
    same_memory = least_work_tiling(*latent, decode_memory(*latent, generate_av))  # 16 calls, no extra voxels
    voxels, tiles, _ = decode_work(*latent, same_memory)
    assert decode_memory(*latent, same_memory) <= decode_memory(*latent, generate_av)
    assert voxels == untiled and tiles < calls
    assert least_work_tiling(*latent, 0.7 * untiled).spatial_tile_px is None  # time chunks alone: no extra voxels
    assert decode_work(*latent, least_work_tiling(*latent, 0.7 * untiled))[0] == untiled
    work = []
    for share in (0.9, 0.6, 0.4, 0.25, 0.1):  # less memory never means less work
        tiling = least_work_tiling(*latent, share * untiled)
        voxels, tiles, _ = decode_work(*latent, tiling)
        assert decode_memory(*latent, tiling) <= share * untiled and tiling_for(tiling.spec, 512, 768, 121) == tiling
        work.append(voxels + tiles * TILE_COST_VOXELS)
    assert work == sorted(work)
    assert least_work_tiling(*latent, 0.03 * untiled) is None  # below 256 px tiles of 8 frames and what they keep
