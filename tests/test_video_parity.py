"""Video VAE decoder/encoder and latent upsamplers against ltx-core 1.0.0 on tiny random-weight models.

References come from `tests/reference/make_video_refs.py`: the files hold bf16 weights (as real checkpoints do)
and ltx-core computed the references in float32 from exactly those values, so loading with dtype float32 must
match to float32 precision. Errors are max |ours - reference| / max |reference|.
"""

from __future__ import annotations

from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from parity import relative_error

from ltx_backend.models.upsampler import upsample_latent
from ltx_backend.models.vae_tiling import TilingConfig, decode_tiled
from ltx_backend.weights.checkpoint import open_checkpoint
from ltx_backend.weights.video import load_upsampler, load_video_decoder, load_video_encoder

FIXTURES = Path(__file__).parent / "fixtures" / "video"
TOLERANCE = 1e-4
# Every layout under test: LTX-2.0 in the unified MLX file and the official file, LTX-2.3 in split MLX files
# (mlx-forge variant upscalers) and the official files.
CHECKPOINTS = {"v20": ["v20_unified", "v20_official"], "v23": ["v23_split", "v23_official"]}
ALL = [(version, name) for version, names in CHECKPOINTS.items() for name in names]


@pytest.fixture(scope="module")
def refs() -> dict[str, np.ndarray]:
    return dict(np.load(FIXTURES / "refs.npz"))


@pytest.mark.parametrize(("version", "name"), ALL)
def test_decoder_matches_ltx_core(refs, version: str, name: str) -> None:
    decoder = load_video_decoder(open_checkpoint(FIXTURES / name), mx.float32)
    expected_padding = "reflect" if version == "v20" else "zeros"  # 2.0 has no key: ltx-core's default applies
    assert decoder.config.decoder_padding == expected_padding
    frames = decoder(mx.array(refs[f"dec{version[1:]}.latent"]))
    assert relative_error(frames, refs[f"dec{version[1:]}.frames"]) <= TOLERANCE


def test_decoder_with_timestep_conditioning_matches_ltx_core(refs) -> None:
    decoder = load_video_decoder(open_checkpoint(FIXTURES / "v20tc_official"), mx.float32)
    latent = mx.array(refs["dec20_tc.latent"])
    frames = decoder(latent, timestep=mx.array(refs["dec20_tc.timestep"]), noise=mx.array(refs["dec20_tc.noise"]))
    assert relative_error(frames, refs["dec20_tc.frames"]) <= TOLERANCE
    default_t = decoder(latent, noise=mx.array(refs["dec20_tc.noise_default_t"]))  # ltx-core's 0.05
    assert relative_error(default_t, refs["dec20_tc.frames_default_t"]) <= TOLERANCE
    with pytest.raises(ValueError, match="noise"):
        decoder(latent)  # decode noise is explicit: no hidden global RNG


def test_decode_noise_is_seedable() -> None:
    decoder = load_video_decoder(open_checkpoint(FIXTURES / "v20tc_official"), mx.float32)
    latent = mx.zeros((1, 8, 2, 2, 2))
    decode = [decoder(latent, noise=mx.random.normal(latent.shape, key=mx.random.key(seed))) for seed in (1, 1, 2)]
    assert mx.array_equal(decode[0], decode[1]) and not mx.array_equal(decode[0], decode[2])


@pytest.mark.parametrize(("version", "name"), ALL)
def test_encoder_matches_ltx_core(refs, version: str, name: str) -> None:
    encoder = load_video_encoder(open_checkpoint(FIXTURES / name), mx.float32)
    latent = encoder(mx.array(refs[f"enc{version[1:]}.video"]))
    assert relative_error(latent, refs[f"enc{version[1:]}.latent"]) <= TOLERANCE


UPSCALERS = [
    ("v20_unified", "spatial_x2", "up_x2_v10"),  # raw PyTorch layout inside the unified MLX file
    ("v20_official", "spatial_x2", "up_x2_v10"),  # ltx-2-spatial-upscaler-x2-1.0.safetensors
    ("v23_official", "spatial_x2", "up_x2_v11"),  # 1.1 preferred
    ("v23_official", "spatial_x1_5", "up_x1_5"),
    ("v23_official", "temporal_x2", "up_t2"),
    ("v23_split", "spatial_x2", "up_x2_v11"),  # mlx-forge files: MLX layout, prefixed keys
    ("v23_split", "spatial_x1_5", "up_x1_5"),
    ("v23_split", "temporal_x2", "up_t2"),
]


@pytest.mark.parametrize(("name", "kind", "reference"), UPSCALERS)
def test_upsampler_matches_ltx_core(refs, name: str, kind: str, reference: str) -> None:
    upsampler = load_upsampler(open_checkpoint(FIXTURES / name), kind, mx.float32)
    assert relative_error(upsampler(mx.array(refs["up.latent"])), refs[f"{reference}.out"]) <= TOLERANCE


def test_upsampler_config_derived_from_weights_when_absent(refs) -> None:
    """The unified file ships no upscaler config: every field follows from the stored tensors."""
    upsampler = load_upsampler(open_checkpoint(FIXTURES / "v20_unified"), "spatial_x2", mx.float32)
    assert (upsampler.config.in_channels, upsampler.config.mid_channels) == (8, 32)
    assert upsampler.config.num_blocks_per_stage == 1 and not upsampler.config.temporal_upsample


def test_upsample_between_stages_matches_ltx_core(refs) -> None:
    """un-normalize -> upsample -> normalize with the VAE statistics (ltx-core ``upsample_video``)."""
    ckpt = open_checkpoint(FIXTURES / "v20_unified")
    encoder, upsampler = load_video_encoder(ckpt, mx.float32), load_upsampler(ckpt, "spatial_x2", mx.float32)
    out = upsample_latent(mx.array(refs["up.latent"]), upsampler, encoder.per_channel_statistics)
    assert relative_error(out, refs["up_x2_v10.upsample_video"]) <= TOLERANCE


def test_tiled_decode_matches_ltx_core_spatial_tiling_with_time_whole(refs) -> None:
    """Spatial tiles blended as ltx-core blends them; time in exact chunks, so the frames are those of ltx-core's
    spatial tiling alone, not of its blended temporal tiles."""
    decoder = load_video_decoder(open_checkpoint(FIXTURES / "v23_split"), mx.float32)
    spatial, spatial_overlap, temporal, temporal_overlap = (int(v) for v in refs["dec23.tiling"])
    tiling = TilingConfig(spatial, spatial_overlap, temporal, temporal_overlap)
    latent = mx.array(refs["dec23.tiled_latent"]).transpose(0, 2, 3, 4, 1)
    chunks = list(decode_tiled(decoder, latent, tiling))
    assert len(chunks) > 1 and sum(chunk.shape[1] for chunk in chunks) == 25  # streamed in time order
    frames = mx.concatenate(chunks, axis=1).transpose(0, 4, 1, 2, 3)
    assert relative_error(frames, refs["dec23.tiled_spatial_frames"]) <= TOLERANCE
    assert relative_error(frames, refs["dec23.tiled_frames"]) > 100 * TOLERANCE  # not ltx-core's temporal blend


def test_bf16_decode_close_to_float32(refs) -> None:
    decoder = load_video_decoder(open_checkpoint(FIXTURES / "v23_split"))  # the file's own dtype
    assert decoder.conv_in.conv.weight.dtype == mx.bfloat16
    frames = decoder(mx.array(refs["dec23.latent"]).astype(mx.bfloat16))
    assert frames.dtype == mx.bfloat16
    # bf16 activations through ~15 convolutions: a few percent of peak (measured 1-2%).
    assert relative_error(frames, refs["dec23.frames"]) <= 5e-2


@pytest.mark.parametrize("name", ["v20_unified", "v23_split"])
def test_encode_decode_round_trip_shapes(name: str) -> None:
    ckpt = open_checkpoint(FIXTURES / name)
    encoder, decoder = load_video_encoder(ckpt, mx.float32), load_video_decoder(ckpt, mx.float32)
    video = mx.random.uniform(-1, 1, (1, 3, 17, 64, 96))
    latent = encoder(video)
    assert latent.shape == (1, 8, 3, 2, 3)  # F' = 1 + (F - 1) / 8, H/32, W/32
    assert decoder(latent).shape == video.shape
    with pytest.raises(ValueError, match="8k\\+1"):
        encoder(video[:, :, :16])


@pytest.mark.parametrize("name", ["v20_unified", "v23_split"])  # reflect and zeros padding
def test_the_cuda_padding_decodes_the_same_frames(name: str, monkeypatch) -> None:
    """The one-gather padding CUDA uses and the concatenations used elsewhere give a decoder the same frames."""
    from ltx_backend.models import video_vae

    decoder = load_video_decoder(open_checkpoint(FIXTURES / name), mx.float32)
    latent = mx.random.normal((1, 8, 3, 2, 3), key=mx.random.key(2))
    frames = {}
    for gather in (True, False):
        monkeypatch.setattr(video_vae, "cuda_gpu", lambda gather=gather: gather)
        frames[gather] = np.array(decoder(latent))
    assert np.array_equal(frames[True], frames[False])


def test_large_activations_submit_each_residual_block_with_the_same_frames(monkeypatch) -> None:
    """Through a Pipeline (a progress callback), activations from SUBMIT_EACH_RESBLOCK_BYTES up are submitted one
    residual block at a time: more submissions, the same frames."""
    from ltx_backend.models import video_vae

    config = video_vae.VideoVAEConfig.from_config({"vae": {**video_vae.LTX2_VAE_SECTION, "decoder_base_channels": 8}})
    decoder = video_vae.VideoDecoder(config)  # LTX-2.0's layout (5 residual blocks a group) at 1/16 of its width
    latent = mx.random.normal((1, 2, 2, 2, 128), key=mx.random.key(3))
    frames, submissions = {}, {}
    async_eval = mx.async_eval
    for threshold in (2**62, 0):
        monkeypatch.setattr(video_vae, "SUBMIT_EACH_RESBLOCK_BYTES", threshold)
        count = [0]

        def counted(*arrays, count=count):
            count[0] += 1
            return async_eval(*arrays)

        monkeypatch.setattr(mx, "async_eval", counted)
        frames[threshold] = np.array(decoder.decode(latent, after_block=lambda done, total: None))
        submissions[threshold] = count[0]
    assert np.array_equal(frames[0], frames[2**62])
    resblocks = sum(len(b.res_blocks) - 1 for b in decoder.up_blocks if isinstance(b, video_vae.ResBlockGroup))
    assert submissions[0] == submissions[2**62] + resblocks > submissions[2**62]


@pytest.mark.parametrize(("mode", "numpy_mode"), [("reflect", "reflect"), ("circular", "wrap"), ("replicate", "edge")])
@pytest.mark.parametrize("pad", [1, 2])
def test_spatial_padding_is_numpys_exactly(mode: str, numpy_mode: str, pad: int) -> None:
    from ltx_backend.models.video_vae import spatial_pad

    x = mx.random.normal((1, 2, 3, 6, 3), key=mx.random.key(0))  # 3 rows: reflect pad 2 reaches the first
    expected = np.pad(np.array(x), [(0, 0), (0, 0), (pad, pad), (pad, pad), (0, 0)], mode=numpy_mode)
    assert np.array_equal(np.array(spatial_pad(x, pad, mode)), expected)


@pytest.mark.parametrize("mode", ["zeros", "reflect", "circular", "replicate"])
@pytest.mark.parametrize(("before", "after"), [(2, 0), (1, 1), (0, 0)])
@pytest.mark.parametrize("gather", [True, False])
def test_a_convolutions_padded_volume_is_numpys_exactly(mode: str, before: int, after: int, gather: bool) -> None:
    """First and last frames repeated (causal / non-causal time padding), then height and width padded: one gather
    (CUDA) or concatenations (elsewhere)."""
    from ltx_backend.models.video_vae import padded_volume

    x = mx.random.normal((2, 3, 4, 5, 3), key=mx.random.key(1))
    numpy_mode = {"zeros": "constant", "reflect": "reflect", "circular": "wrap", "replicate": "edge"}[mode]
    expected = np.pad(np.array(x), [(0, 0), (before, after), (0, 0), (0, 0), (0, 0)], mode="edge")
    expected = np.pad(expected, [(0, 0), (0, 0), (1, 1), (1, 1), (0, 0)], mode=numpy_mode)
    assert np.array_equal(np.array(padded_volume(x, before, after, 1, mode, gather)), expected)


@pytest.mark.parametrize(("mode", "rows"), [("reflect", 1), ("reflect", 2), ("circular", 1)])
def test_spatial_padding_past_the_axis_is_refused_as_torch_refuses_it(mode: str, rows: int) -> None:
    """Reflect padding of 2 on 2 rows (or 1 on 1) would index outside the axis: MLX's take does not check, and a
    preview of a 1-pixel latent decoded different garbage on every call."""
    from ltx_backend.models.video_vae import spatial_pad

    with pytest.raises(ValueError, match="padding"):
        spatial_pad(mx.zeros((1, 1, rows, 4, 3)), 2 if mode == "reflect" and rows == 2 else rows + 1, mode)
