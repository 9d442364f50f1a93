"""Generate tiny video reference fixtures from Lightricks' ltx-core (PyTorch).

For two model versions -- ``v20`` (LTX-2.0 style video VAE: reflect-padded decoder with residual
``compress_all`` blocks) and ``v23`` (LTX-2.3 style: zero padding, ``compress_space``/``compress_time``
decoder blocks) -- plus the latent upsamplers (spatial x2 v1.0 / v1.1, rational x1.5, temporal x2), this script
builds tiny, seeded, random-weight modules with ltx-core's own configurators, rounds their weights to bfloat16 (the
files store bf16, as real checkpoints do), runs them in float32 on seeded inputs and writes into
``tests/fixtures/video/``:

* ``refs.npz``: inputs and reference outputs (float32; ``dec23.tiling`` is int32), keys ``<model>.<name>``.
* ``<version>_official/``: Lightricks' single-file checkpoint naming (``vae.decoder.*``, ``vae.encoder.*``,
  ``vae.per_channel_statistics.*``), PyTorch layout, config in metadata; upscalers as separate official files.
* ``v20tc_official/``: the timestep-conditioned decoder ``dec20_tc`` (official layout, decoder only).
* ``v20_unified/``: MLX single-file layout (``model.safetensors`` + ``config.json`` + ``embedded_config.json``).
* ``v23_split/``: MLX split layout (``vae_decoder``/``vae_encoder`` files, the mlx-forge upscaler files,
  ``split_model.json``).

Everything is deterministic; re-running overwrites the fixtures with byte-identical files.
Run from the repository root with the reference venv (PyTorch CPU + ltx-core):

    /tmp/ltx-ref-venv/bin/python tests/reference/make_video_refs.py
"""

from __future__ import annotations

import copy
import functools
import json
import shutil
from pathlib import Path

import fixture_io  # this folder's shared fixture writers (the script's folder is on sys.path)
import numpy as np
import torch
from ltx_core.loader.single_gpu_model_builder import SingleGPUModelBuilder
from ltx_core.model.upsampler import LatentUpsampler, LatentUpsamplerConfigurator, upsample_video
from ltx_core.model.video_vae import video_vae as video_vae_module
from ltx_core.model.video_vae.model_configurator import (
    VAE_DECODER_COMFY_KEYS_FILTER,
    VAE_ENCODER_COMFY_KEYS_FILTER,
    VideoDecoderConfigurator,
    VideoEncoderConfigurator,
)
from ltx_core.model.video_vae.tiling import SpatialTilingConfig, TemporalTilingConfig, TilingConfig
from ltx_core.model.video_vae.video_vae import VideoDecoder, VideoEncoder
from safetensors.torch import load_file
from torch import nn

OUT_DIR = Path(__file__).resolve().parents[1] / "fixtures" / "video"
VERSIONS = {"v20": "2.0.0", "v23": "2.3.0"}
# The MLX layouts share their key mapping across versions, so each version is written in one of them (plus the
# official layout): that covers every layout while keeping the fixtures small.
LAYOUTS = {"v20": ("official", "unified"), "v23": ("official", "split")}
INPUT_SEED = 4321
STORAGE_DTYPE = torch.bfloat16  # what the checkpoint files hold; references are computed in float32 from it

# Widths are shrunk to keep the files small; our loader decides conv layouts by exact shapes and file evidence, never
# by channel-count heuristics, so small widths load like big ones. v20's residual compress_all blocks fold their
# input's channels by 2x2x2: each of their input widths (8, 4, 2 x base) must be a multiple of 8, so base >= 4.
LATENT_CHANNELS = 8
DECODER_BASE_CHANNELS = {"v20": 4, "v23": 4}
UPSAMPLER_MID_CHANNELS = 32  # GroupNorm(32, mid) needs a multiple of 32
UPSAMPLER_BLOCKS_PER_STAGE = 1  # ResBlocks before and after the upsampling step (real checkpoints: 4)

DECODE_LATENT_SHAPE = (1, LATENT_CHANNELS, 2, 2, 2)  # -> frames (1, 3, 9, 64, 64); reflect padding needs H, W > 1
ENCODE_VIDEO_SHAPE = (1, 3, 9, 32, 64)  # -> latent (1, 8, 2, 1, 2)
TILED_LATENT_SHAPE = (1, LATENT_CHANNELS, 4, 1, 3)  # -> frames (1, 3, 25, 32, 96)
UPSAMPLER_LATENT_SHAPE = (1, LATENT_CHANNELS, 3, 4, 6)
# Tiling: spatial tile 64 px (2 latents) with 32 px overlap -> 2 tiles on W (3 latents), 1 on H (1 latent);
# temporal tile 24 frames (3 latents) with 8 frames overlap -> 2 causal tiles over 4 latent frames.
TILING = {"spatial_tile_px": 64, "spatial_overlap_px": 32, "temporal_tile_frames": 24, "temporal_overlap_frames": 8}
TC_TIMESTEP = 0.07  # explicit timestep for dec20_tc (ltx-core's default, used for frames_default_t, is 0.05)
TC_NOISE_SEEDS = (7, 8)  # torch.Generator seeds of the dec20_tc decodes (explicit / default timestep)
# The shared fixture writers, bound to this script's output folder and storage dtype.
save_safetensors = functools.partial(fixture_io.save_safetensors, dtype=STORAGE_DTYPE, root=OUT_DIR)
write_json = fixture_io.write_json
save_npz = fixture_io.save_npz
fresh_dir = functools.partial(fixture_io.fresh_dir, OUT_DIR)

# ---------------------------------------------------------------------------
# Configs (ltx-core checkpoint "config" metadata layout)
# ---------------------------------------------------------------------------


def _res(**extra) -> list:
    return ["res_x", {"num_layers": 1, **extra}]


DEC20_BLOCKS = [
    _res(inject_noise=False),
    ["compress_all", {"residual": True, "multiplier": 2}],
    _res(inject_noise=False),
    ["compress_all", {"residual": True, "multiplier": 2}],
    _res(inject_noise=False),
    ["compress_all", {"residual": True, "multiplier": 2}],
    _res(inject_noise=False),
]
DEC23_BLOCKS = [
    _res(),
    ["compress_space", {"multiplier": 2}],
    _res(),
    ["compress_time", {"multiplier": 2}],
    _res(),
    ["compress_all", {"multiplier": 1}],
    _res(),
    ["compress_all", {"multiplier": 2}],
    _res(),
]


def _encoder_blocks(last_multiplier: int) -> list:
    """The real encoder block kinds/order with shrunk widths: 16 -x2-> 32 -x1-> 32 -x2-> 64 -x<last>-> 64*last.

    (The real multipliers 2/2/2/2 would grow 16 latent channels to 256 features: ~5M parameters.) The two deepest
    res_x blocks have no layers (an empty UNetMidBlock3D is the identity); res_x is exercised at 16 and 32 channels.
    """
    return [
        _res(),
        ["compress_space_res", {"multiplier": 2}],
        _res(),
        ["compress_time_res", {"multiplier": 1}],
        _res(),
        ["compress_all_res", {"multiplier": 2}],
        ["res_x", {"num_layers": 0}],
        ["compress_all_res", {"multiplier": last_multiplier}],
        ["res_x", {"num_layers": 0}],
    ]


def _vae_common(version: str) -> dict:
    return {
        "dims": 3,
        "in_channels": 3,
        "latent_channels": LATENT_CHANNELS,
        "out_channels": 3,
        "patch_size": 4,
        "norm_layer": "pixel_norm",
        "latent_log_var": "uniform",
        "causal_decoder": False,
        "decoder_base_channels": DECODER_BASE_CHANNELS[version],
    }


def vae_config(version: str, timestep_conditioning: bool = False) -> dict:
    """Merged ``vae`` section (decoder + encoder + shared keys). v20 has no spatial_padding_mode key, like the real
    LTX-2.0 header: ltx-core then pads the decoder with "reflect" and the encoder with "zeros"."""
    cfg = _vae_common(version)
    cfg["timestep_conditioning"] = timestep_conditioning
    if version == "v20":
        cfg["decoder_blocks"] = DEC20_BLOCKS
        cfg["encoder_blocks"] = _encoder_blocks(2)
    else:
        cfg["spatial_padding_mode"] = "zeros"
        cfg["decoder_blocks"] = DEC23_BLOCKS
        cfg["encoder_blocks"] = _encoder_blocks(1)
    return copy.deepcopy(cfg)


def upsampler_config(kind: str) -> dict:
    cfg = {
        "in_channels": LATENT_CHANNELS,
        "mid_channels": UPSAMPLER_MID_CHANNELS,
        "num_blocks_per_stage": UPSAMPLER_BLOCKS_PER_STAGE,
        "dims": 3,
        "spatial_upsample": True,
        "temporal_upsample": False,
        "spatial_scale": 2.0,
        "rational_resampler": False,
    }
    if kind == "x1_5":
        cfg.update(rational_resampler=True, spatial_scale=1.5)
    elif kind == "t2":
        cfg.update(spatial_upsample=False, temporal_upsample=True)
    return cfg


def mlx_config(version: str) -> dict:
    return {"model_type": "AudioVideo", "model_version": VERSIONS[version]}


# ---------------------------------------------------------------------------
# Random weights
# ---------------------------------------------------------------------------


def randomize_(module: nn.Module, gen: torch.Generator) -> None:
    """Randomise biases, GroupNorm affine params and the (zero/uninitialised) conditioning tables and scales.

    Conv and Linear weights keep the default torch init. Per-channel statistics are set separately.
    """
    norm_weights = {f"{name}.weight" for name, mod in module.named_modules() if isinstance(mod, nn.GroupNorm)}
    with torch.no_grad():
        for name, param in module.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            if name in norm_weights:
                param.copy_(1.0 + torch.randn(param.shape, generator=gen) * 0.1)
            elif leaf == "bias":
                param.copy_(torch.randn(param.shape, generator=gen) * 0.1)
            elif leaf in ("scale_shift_table", "last_scale_shift_table"):
                param.copy_(torch.randn(param.shape, generator=gen) * 0.2)
            elif leaf == "timestep_scale_multiplier":
                param.copy_(1000.0 + torch.randn(param.shape, generator=gen) * 20.0)
            elif leaf.startswith("per_channel_scale"):
                param.copy_(torch.randn(param.shape, generator=gen) * 0.1)


def round_to_storage_(module: nn.Module) -> None:
    """Round every parameter and buffer to the storage dtype (bf16, like the real checkpoints) and back to float32.

    The references are then computed in float32 from exactly the values the files hold, so a port that loads the
    bf16 files and computes in float32 must match to float32 precision, while the files stay half the size.
    """
    with torch.no_grad():
        for tensor in (*module.parameters(), *module.buffers()):
            tensor.copy_(tensor.to(STORAGE_DTYPE).to(torch.float32))


def random_statistics(gen: torch.Generator) -> dict[str, torch.Tensor]:
    """Per-channel latent statistics of one version, incl. the three extra ones real files carry (unused)."""
    mean_of_means = torch.randn(LATENT_CHANNELS, generator=gen) * 0.5
    std_of_means = torch.rand(LATENT_CHANNELS, generator=gen) + 0.5
    mean_of_stds = torch.rand(LATENT_CHANNELS, generator=gen) + 0.5
    return {
        "mean-of-means": mean_of_means,
        "std-of-means": std_of_means,
        "channel": torch.arange(LATENT_CHANNELS, dtype=torch.float32),
        "mean-of-stds": mean_of_stds,
        "mean-of-stds_over_std-of-means": mean_of_stds / std_of_means,
    }


def set_statistics_(module: nn.Module, stats: dict[str, torch.Tensor]) -> None:
    with torch.no_grad():
        for key in ("mean-of-means", "std-of-means"):
            module.per_channel_statistics.get_buffer(key).copy_(stats[key])


def build_decoder(cfg: dict, seed: int, gen: torch.Generator, stats: dict) -> VideoDecoder:
    torch.manual_seed(seed)  # conv/linear weights: default torch init
    decoder = VideoDecoderConfigurator.from_config({"vae": copy.deepcopy(cfg)}).float().eval()
    randomize_(decoder, gen)
    set_statistics_(decoder, stats)
    round_to_storage_(decoder)
    return decoder


def build_encoder(cfg: dict, seed: int, gen: torch.Generator, stats: dict) -> VideoEncoder:
    torch.manual_seed(seed)
    encoder = VideoEncoderConfigurator.from_config({"vae": copy.deepcopy(cfg)}).float().eval()
    randomize_(encoder, gen)
    set_statistics_(encoder, stats)
    round_to_storage_(encoder)
    return encoder


def build_upsampler(cfg: dict, seed: int, gen: torch.Generator) -> LatentUpsampler:
    torch.manual_seed(seed)
    upsampler = LatentUpsamplerConfigurator.from_config(copy.deepcopy(cfg)).float().eval()
    randomize_(upsampler, gen)
    round_to_storage_(upsampler)
    return upsampler


def padding_mode(module: nn.Module) -> str:
    return module.conv_in.conv.padding_mode


# ---------------------------------------------------------------------------
# Checkpoint layouts
# ---------------------------------------------------------------------------

MLX_PERMUTATIONS = {nn.Conv3d: (0, 2, 3, 4, 1), nn.Conv2d: (0, 2, 3, 1)}
STATS_KEYS = ("mean-of-means", "std-of-means")


def to_mlx(module: nn.Module) -> dict[str, torch.Tensor]:
    """State dict with Conv3d/Conv2d weights in MLX layout (Linear, norms, buffers unchanged)."""
    kinds = {f"{name}.weight": type(mod) for name, mod in module.named_modules() if type(mod) in MLX_PERMUTATIONS}
    return {
        key: value.permute(*MLX_PERMUTATIONS[kinds[key]]) if key in kinds else value
        for key, value in module.state_dict().items()
    }


def without_stats(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {key: value for key, value in state.items() if not key.startswith("per_channel_statistics.")}


def official_vae(decoder: nn.Module, encoder: nn.Module | None, stats: dict) -> dict:
    out = {f"vae.decoder.{key}": value for key, value in without_stats(decoder.state_dict()).items()}
    if encoder is not None:
        out.update({f"vae.encoder.{key}": value for key, value in without_stats(encoder.state_dict()).items()})
    out.update({f"vae.per_channel_statistics.{key}": value for key, value in stats.items()})
    return out


def mlx_decoder(decoder: nn.Module, stats: dict) -> dict:
    out = without_stats(to_mlx(decoder))
    out["per_channel_statistics.mean"] = stats["mean-of-means"]
    out["per_channel_statistics.std"] = stats["std-of-means"]
    return out


def mlx_encoder(encoder: nn.Module, stats: dict) -> dict:
    out = without_stats(to_mlx(encoder))
    out["per_channel_statistics._mean_of_means"] = stats["mean-of-means"]
    out["per_channel_statistics._std_of_means"] = stats["std-of-means"]
    return out


def prefixed(prefix: str, tensors: dict) -> dict:
    return {f"{prefix}.{key}": value for key, value in tensors.items()}


UPSAMPLER_KINDS = {"up_x2_v10": "x2", "up_x2_v11": "x2", "up_x1_5": "x1_5", "up_t2": "t2"}
OFFICIAL_UPSCALER_FILES = {
    "up_x2_v10": "ltx-2-spatial-upscaler-x2-1.0.safetensors",
    "up_x2_v11": "ltx-2.3-spatial-upscaler-x2-1.1.safetensors",
    "up_x1_5": "ltx-2.3-spatial-upscaler-x1.5-1.0.safetensors",
    "up_t2": "ltx-2.3-temporal-upscaler-x2-1.0.safetensors",
}
FORGE_UPSCALER_NAMES = {
    "up_x2_v11": "spatial_upscaler_x2_v1_1",
    "up_x1_5": "spatial_upscaler_x1_5_v1_0",
    "up_t2": "temporal_upscaler_x2_v1_0",
}


def write_version(version: str, decoder, encoder, stats: dict, upsamplers: dict[str, LatentUpsampler]) -> None:
    """upsamplers: {model name: module}, the first being the x2 one that unified/split store as ``upsampler``."""
    cfg = vae_config(version)
    for kind in ("official", "unified", "split"):
        shutil.rmtree(OUT_DIR / f"{version}_{kind}", ignore_errors=True)
    official, unified, split = (fresh_dir(f"{version}_{kind}") for kind in ("official", "unified", "split"))

    save_safetensors(
        official_vae(decoder, encoder, stats),
        official / f"ltx-tiny-{version}.safetensors",
        metadata={"config": json.dumps({"vae": cfg})},
    )
    for name, upsampler in upsamplers.items():
        save_safetensors(
            upsampler.state_dict(),
            official / OFFICIAL_UPSCALER_FILES[name],
            metadata={"config": json.dumps(upsampler_config(UPSAMPLER_KINDS[name]))},
        )

    x2 = next(iter(upsamplers.values()))
    unified_tensors = prefixed("vae_decoder", mlx_decoder(decoder, stats))
    unified_tensors.update(prefixed("vae_encoder", mlx_encoder(encoder, stats)))
    unified_tensors.update(prefixed("upsampler", x2.state_dict()))  # raw PyTorch layout and names
    save_safetensors(unified_tensors, unified / "model.safetensors")

    save_safetensors(mlx_decoder(decoder, stats), split / "vae_decoder.safetensors")
    save_safetensors(mlx_encoder(encoder, stats), split / "vae_encoder.safetensors")
    components = ["vae_decoder", "vae_encoder"]
    if version != "v23":  # v23 carries its x2 upscaler only as the mlx-forge file below
        save_safetensors(x2.state_dict(), split / "upsampler.safetensors")
        components.append("upsampler")
    split_embedded = {"vae": cfg}
    if version == "v23":  # mlx-forge upscaler files: MLX conv layout, component prefix inside the file
        split_embedded["upscalers"] = {}
        for name, upsampler in upsamplers.items():
            forge = FORGE_UPSCALER_NAMES[name]
            save_safetensors(prefixed(forge, to_mlx(upsampler)), split / f"{forge}.safetensors")
            split_embedded["upscalers"][forge] = upsampler_config(UPSAMPLER_KINDS[name])
            components.append(forge)

    for directory in (unified, split):
        write_json(mlx_config(version), directory / "config.json")
    write_json({"vae": cfg}, unified / "embedded_config.json")
    write_json(split_embedded, split / "embedded_config.json")
    write_json(
        {
            "format": "split",
            "model_version": VERSIONS[version],
            "components": components,
            "source": "tiny",
            "variant": "distilled",
        },
        split / "split_model.json",
    )
    for kind in ("unified", "split"):
        if kind not in LAYOUTS[version]:
            shutil.rmtree(OUT_DIR / f"{version}_{kind}")


# ---------------------------------------------------------------------------
# References
# ---------------------------------------------------------------------------


def clone_generator(gen: torch.Generator) -> torch.Generator:
    twin = torch.Generator()
    twin.set_state(gen.get_state())
    return twin


@torch.no_grad()
def decode_with_recorded_noise(
    decoder: VideoDecoder, latent: torch.Tensor, timestep: torch.Tensor | None, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode with a seeded generator and return (frames, the unscaled noise the decoder drew).

    The noise is drawn from a clone of the generator with the decoder's own call; the result is checked twice: the
    generator consumed exactly that draw, and decoding with torch.randn patched to return the recorded noise gives
    the same frames.
    """
    gen = torch.Generator().manual_seed(seed)
    twin = clone_generator(gen)
    noise = torch.randn(latent.size(), generator=twin, dtype=latent.dtype, device=latent.device)
    frames = decoder(latent, timestep=timestep, generator=gen)
    assert torch.equal(gen.get_state(), twin.get_state()), "the decoder drew more (or other) random numbers"

    real_randn = video_vae_module.torch.randn
    video_vae_module.torch.randn = lambda *args, **kwargs: noise.clone()
    try:
        replay = decoder(latent, timestep=timestep, generator=None)
    finally:
        video_vae_module.torch.randn = real_randn
    assert torch.equal(frames, replay), "recorded noise does not reproduce the decoder output"
    return frames, noise


def tiling_config() -> TilingConfig:
    return TilingConfig(
        spatial_config=SpatialTilingConfig(TILING["spatial_tile_px"], TILING["spatial_overlap_px"]),
        temporal_config=TemporalTilingConfig(TILING["temporal_tile_frames"], TILING["temporal_overlap_frames"]),
    )


@torch.no_grad()
def make_references() -> dict[str, torch.Tensor | np.ndarray]:
    gen = torch.Generator().manual_seed(INPUT_SEED)  # inputs
    weights_gen = {version: torch.Generator().manual_seed(seed) for version, seed in (("v20", 20), ("v23", 23))}
    refs: dict[str, torch.Tensor | np.ndarray] = {}

    # --- models -------------------------------------------------------------------------------------------------
    stats = {version: random_statistics(weights_gen[version]) for version in VERSIONS}
    dec20 = build_decoder(vae_config("v20"), 200, weights_gen["v20"], stats["v20"])
    enc20 = build_encoder(vae_config("v20"), 201, weights_gen["v20"], stats["v20"])
    dec23 = build_decoder(vae_config("v23"), 230, weights_gen["v23"], stats["v23"])
    enc23 = build_encoder(vae_config("v23"), 231, weights_gen["v23"], stats["v23"])

    # dec20_tc: dec20's weights plus random conditioning parameters (time embedders, tables, scale multiplier).
    tc_cfg = vae_config("v20", timestep_conditioning=True)
    del tc_cfg["encoder_blocks"]  # decoder-only checkpoint
    dec20_tc = build_decoder(tc_cfg, 202, weights_gen["v20"], stats["v20"])
    missing, unexpected = dec20_tc.load_state_dict(dec20.state_dict(), strict=False)
    assert not unexpected and all("time_embedder" in k or "scale" in k for k in missing), (missing, unexpected)

    up_gen = torch.Generator().manual_seed(99)
    upsamplers = {
        name: build_upsampler(upsampler_config(UPSAMPLER_KINDS[name]), seed, up_gen)
        for name, seed in (("up_x2_v10", 100), ("up_x2_v11", 110), ("up_x1_5", 115), ("up_t2", 120))
    }

    print("padding modes:", {name: padding_mode(m) for name, m in [("dec20", dec20), ("dec20_tc", dec20_tc),
          ("dec23", dec23), ("enc20", enc20), ("enc23", enc23)]})  # fmt: skip
    assert padding_mode(dec20) == padding_mode(dec20_tc) == "reflect"
    assert padding_mode(dec23) == padding_mode(enc20) == padding_mode(enc23) == "zeros"

    # --- decoders -----------------------------------------------------------------------------------------------
    latent20 = torch.randn(DECODE_LATENT_SHAPE, generator=gen)
    refs["dec20.latent"] = latent20
    refs["dec20.frames"] = dec20(latent20)

    timestep = torch.tensor([TC_TIMESTEP], dtype=torch.float32)
    frames, noise = decode_with_recorded_noise(dec20_tc, latent20, timestep, seed=TC_NOISE_SEEDS[0])
    refs["dec20_tc.latent"] = latent20
    refs["dec20_tc.timestep"] = timestep
    refs["dec20_tc.noise"] = noise
    refs["dec20_tc.frames"] = frames
    frames, noise = decode_with_recorded_noise(dec20_tc, latent20, None, seed=TC_NOISE_SEEDS[1])
    refs["dec20_tc.noise_default_t"] = noise
    refs["dec20_tc.frames_default_t"] = frames

    latent23 = torch.randn(DECODE_LATENT_SHAPE, generator=gen)
    refs["dec23.latent"] = latent23
    refs["dec23.frames"] = dec23(latent23)

    tiled_latent = torch.randn(TILED_LATENT_SHAPE, generator=gen)
    tiles = dec23._prepare_tiles(tiled_latent, tiling_config())
    print(f"tiled decode: {len(tiles)} tiles")
    for tile in tiles:
        latent_ranges = [(s.start, s.stop) for s in tile.in_coords[2:]]
        print(f"  latent (F, H, W) {latent_ranges} -> frames/px {[(s.start, s.stop) for s in tile.out_coords[2:]]}")
    chunks = list(dec23.tiled_decode(tiled_latent, tiling_config()))
    refs["dec23.tiled_latent"] = tiled_latent
    refs["dec23.tiled_frames"] = torch.cat(chunks, dim=2)
    refs["dec23.tiling"] = np.array(list(TILING.values()), dtype=np.int32)
    # Our decode runs time in exact chunks (no temporal blend): its reference is ltx-core's spatial tiling alone,
    # time in one tile (ltx-core 1.0.0's tiled_decode fails without a temporal config).
    whole_time = TemporalTilingConfig(8 * TILED_LATENT_SHAPE[2], TILING["temporal_overlap_frames"])
    spatial_only = TilingConfig(spatial_config=tiling_config().spatial_config, temporal_config=whole_time)
    refs["dec23.tiled_spatial_frames"] = torch.cat(list(dec23.tiled_decode(tiled_latent, spatial_only)), dim=2)
    print(f"tiled decode: chunks of {[c.shape[2] for c in chunks]} frames, max |tiled - untiled| = "
          f"{(refs['dec23.tiled_frames'] - dec23(tiled_latent)).abs().max():.4g}")  # fmt: skip

    # --- encoders -----------------------------------------------------------------------------------------------
    for name, encoder in (("enc20", enc20), ("enc23", enc23)):
        video = torch.rand(ENCODE_VIDEO_SHAPE, generator=gen) * 2.0 - 1.0
        refs[f"{name}.video"] = video
        refs[f"{name}.latent"] = encoder(video)

    # --- upsamplers ---------------------------------------------------------------------------------------------
    up_latent = torch.randn(UPSAMPLER_LATENT_SHAPE, generator=gen)
    refs["up.latent"] = up_latent
    for name, upsampler in upsamplers.items():
        refs[f"{name}.out"] = upsampler(up_latent)
    refs["up_x2_v10.upsample_video"] = upsample_video(up_latent, enc20, upsamplers["up_x2_v10"])

    # --- checkpoints --------------------------------------------------------------------------------------------
    print("v20:")
    write_version("v20", dec20, enc20, stats["v20"], {"up_x2_v10": upsamplers["up_x2_v10"]})
    print("v23:")
    write_version("v23", dec23, enc23, stats["v23"], {k: upsamplers[k] for k in ("up_x2_v11", "up_x1_5", "up_t2")})
    print("v20tc:")
    tc_dir = fresh_dir("v20tc_official")
    save_safetensors(
        official_vae(dec20_tc, None, stats["v20"]),
        tc_dir / "ltx-tiny-v20tc.safetensors",
        metadata={"config": json.dumps({"vae": tc_cfg})},
    )
    return refs


# ---------------------------------------------------------------------------
# Self-checks: the official files load back into ltx-core and reproduce the references; the MLX files hold the same
# tensors.
# ---------------------------------------------------------------------------


@torch.no_grad()
def load_official(configurator, path: Path, sd_ops=None) -> nn.Module:
    model = SingleGPUModelBuilder(configurator, str(path), sd_ops).build(device=torch.device("cpu"))
    tensors = [*model.parameters(), *model.buffers()]
    assert not any(t.is_meta for t in tensors), f"{path}: uninitialised tensors"
    # The builder assigns tensors that view the file's bytes, at arbitrary alignments, for which CPU kernels may
    # round differently (~1e-6); copies into fresh (aligned) memory reproduce the references bit for bit.
    for tensor in tensors:
        tensor.data = tensor.data.clone()
    return model.float().eval()  # bf16 files, float32 compute (as the references)


@torch.no_grad()
def verify_official(refs: dict) -> None:
    def check(name: str, got: torch.Tensor) -> None:
        assert torch.equal(got, refs[name]), f"{name}: the official checkpoint does not reproduce the reference"

    def decoder(directory: str, file: str) -> VideoDecoder:
        return load_official(VideoDecoderConfigurator, OUT_DIR / directory / file, VAE_DECODER_COMFY_KEYS_FILTER)

    def encoder(directory: str, file: str) -> VideoEncoder:
        return load_official(VideoEncoderConfigurator, OUT_DIR / directory / file, VAE_ENCODER_COMFY_KEYS_FILTER)

    check("dec20.frames", decoder("v20_official", "ltx-tiny-v20.safetensors")(refs["dec20.latent"]))
    check("dec23.frames", decoder("v23_official", "ltx-tiny-v23.safetensors")(refs["dec23.latent"]))
    dec20_tc = decoder("v20tc_official", "ltx-tiny-v20tc.safetensors")
    generator = torch.Generator().manual_seed(TC_NOISE_SEEDS[0])
    check("dec20_tc.frames", dec20_tc(refs["dec20_tc.latent"], refs["dec20_tc.timestep"], generator))
    enc20 = encoder("v20_official", "ltx-tiny-v20.safetensors")
    check("enc20.latent", enc20(refs["enc20.video"]))
    check("enc23.latent", encoder("v23_official", "ltx-tiny-v23.safetensors")(refs["enc23.video"]))
    for name, file in OFFICIAL_UPSCALER_FILES.items():
        directory = "v20_official" if name == "up_x2_v10" else "v23_official"
        upsampler = load_official(LatentUpsamplerConfigurator, OUT_DIR / directory / file)
        check(f"{name}.out", upsampler(refs["up.latent"]))
        if name == "up_x2_v10":
            check("up_x2_v10.upsample_video", upsample_video(refs["up.latent"], enc20, upsampler))


def from_mlx(key: str, value: torch.Tensor) -> torch.Tensor:
    """Undo `to_mlx` (conv weights are the only 5-D / 4-D tensors, except the stored blur kernel)."""
    if value.ndim == 5:
        return value.permute(0, 4, 1, 2, 3)
    if value.ndim == 4 and not key.endswith("blur_down.kernel"):
        return value.permute(0, 3, 1, 2)
    return value


MLX_STATS_NAMES = {
    "per_channel_statistics.mean": "mean-of-means",
    "per_channel_statistics.std": "std-of-means",
    "per_channel_statistics._mean_of_means": "mean-of-means",
    "per_channel_statistics._std_of_means": "std-of-means",
}


def official_counterpart(official: dict, x2: dict, component: str, key: str) -> torch.Tensor:
    """The official tensor behind the unified/split tensor ``<component>.<key>``."""
    if component == "upsampler":
        return x2[key]
    if key in MLX_STATS_NAMES:
        return official[f"vae.per_channel_statistics.{MLX_STATS_NAMES[key]}"]
    return official[f"vae.{component.removeprefix('vae_')}.{key}"]


def verify_mlx_layouts() -> None:
    for version in VERSIONS:
        official = load_file(OUT_DIR / f"{version}_official" / f"ltx-tiny-{version}.safetensors")
        x2_file = OFFICIAL_UPSCALER_FILES["up_x2_v10" if version == "v20" else "up_x2_v11"]
        x2 = load_file(OUT_DIR / f"{version}_official" / x2_file)
        if "unified" in LAYOUTS[version]:
            stored = load_file(OUT_DIR / f"{version}_unified" / "model.safetensors")
        else:
            stored = {
                f"{c}.{key}": value
                for c in ("vae_decoder", "vae_encoder")
                for key, value in load_file(OUT_DIR / f"{version}_split" / f"{c}.safetensors").items()
            }
        for full_key, value in stored.items():
            component, key = full_key.split(".", 1)
            mine = value if component == "upsampler" else from_mlx(key, value)
            assert torch.equal(mine, official_counterpart(official, x2, component, key)), full_key
        n_official = sum(1 for k in official if not k.startswith("vae.per_channel_statistics.")) + 2 * 2
        stored_x2 = len(x2) if "unified" in LAYOUTS[version] else 0
        assert len(stored) - stored_x2 == n_official, "MLX VAE tensors != official ones"

    for name, forge in FORGE_UPSCALER_NAMES.items():
        official = load_file(OUT_DIR / "v23_official" / OFFICIAL_UPSCALER_FILES[name])
        stored = load_file(OUT_DIR / "v23_split" / f"{forge}.safetensors")
        assert {k.removeprefix(forge + ".") for k in stored} == set(official), forge
        for key, value in stored.items():
            key = key.removeprefix(forge + ".")
            assert torch.equal(from_mlx(key, value), official[key]), f"{forge}: {key}"


def main() -> None:
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    OUT_DIR.mkdir(parents=True, exist_ok=True)

    refs = make_references()
    arrays = {
        key: value if isinstance(value, np.ndarray) else value.detach().numpy().astype(np.float32)
        for key, value in refs.items()
    }
    save_npz(arrays, OUT_DIR / "refs.npz")
    verify_official(refs)
    verify_mlx_layouts()
    print("self-checks passed: official files reproduce the references in ltx-core; MLX files match them")

    print("refs.npz:")
    for key, array in arrays.items():
        print(f"  {key:28s} {array.dtype!s:8s} {array.shape!s:22s} std {array.astype(np.float64).std():.3f}")


if __name__ == "__main__":
    main()
