"""Tiled video decoding: modes, exact stitching, streaming, and lower peak memory.

The parity of our tiled decode with ltx-core's own tiled decode is in test_video_parity.py. Here the stitching
itself is checked exactly: with a decoder that maps each latent cell to its own block of pixels (no receptive
field), every tiling must reproduce the untiled decode to float rounding, whatever the tile sizes.
"""

from __future__ import annotations

from pathlib import Path

import mlx.core as mx
import pytest

from ltx_backend.models.vae_tiling import TILING_MODES, TilingConfig, decode_tiled, tiling_for
from ltx_backend.models.video_vae import SPACE_SCALE, TIME_SCALE
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
    if tiling.temporal_tile_frames is not None:
        assert len(chunks) > 1  # frames are streamed chunk by chunk


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
    assert tiling_for("auto", height, width, frames) == expected


def test_named_modes_and_validation() -> None:
    assert tiling_for("none", 2048, 2048, 481) is None
    assert tiling_for("conservative", 64, 64, 9) == TilingConfig(768, 64, 96, 24)
    assert tiling_for("spatial", 64, 64, 9).temporal_tile_frames is None
    with pytest.raises(ValueError, match="unknown tiling mode"):
        tiling_for("huge", 64, 64, 9)
    for bad in ((48, 0, None, 0), (100, 0, None, 0), (64, 64, None, 0), (None, 0, 12, 0), (None, 0, 16, 16)):
        with pytest.raises(ValueError):
            TilingConfig(*bad)
