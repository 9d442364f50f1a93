"""The video VAE and latent-upscaler loaders against the key listings of the real LTX-2 checkpoints, without weights.

For each manifest a data-less checkpoint is built from the listing, the full-size video VAE decoder and encoder and
every upscaler the checkpoint holds are built from its config (or, for upscalers without one, from the shapes of
their weights), and the load is planned: every stored video tensor must feed a parameter of the decoder, the encoder
or an upscaler (or be one of the VAE statistics that nothing reads), every parameter must be fed, and the shapes must
agree after the planned permutation. The official manifests hold no upscaler tensors: Lightricks ships the upscalers
as separate files, which these manifests do not list. The mlx-forge variants of the split repo are synthesized from
the listing and must plan too.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from manifest_checkpoint import (
    LTX_MANIFESTS,
    check_plan,
    join_files,
    load_manifest,
    manifest_checkpoint,
    param_count,
    split_files,
    stored_keys,
    used_keys,
    with_possible_extras,
)

from ltx_backend.errors import ErrorCode, LtxError
from ltx_backend.models.statistics import UNUSED_STATISTICS
from ltx_backend.models.upsampler import LatentUpsampler, UpsamplerConfig
from ltx_backend.models.video_vae import (
    VideoDecoder,
    VideoEncoder,
    VideoVAEConfig,
    sanitize_decoder_key,
    sanitize_encoder_key,
)
from ltx_backend.weights.checkpoint import TORCH_LAYOUT_COMPONENTS, Checkpoint, Component, Layout
from ltx_backend.weights.load import plan_module
from ltx_backend.weights.plan import LoadPlan
from ltx_backend.weights.video import UPSCALERS, _vae_component, find_upscaler, video_vae_config

# Parameter counts (manifest summaries: ltx_core modules built on the meta device; mlx_video's converter output).
DECODER_PARAMS = {"2.0": 528_380_976, "2.3": 407_169_328}
ENCODER_PARAMS = {"2.0": 694_099_137, "2.3": 318_937_153}
# The generate_av reference counts 497,867,929 for the x2 upscaler: mlx_video's module also holds the unused 5x5
# blur kernel of the rational resampler (25 values), which no x2 file stores. The x1.5 file stores its kernel.
UPSCALER_PARAMS = {"spatial_x2": 497_867_904, "spatial_x1_5": 545_058_969, "temporal_x2": 130_968_192}
UPSCALER_CONFIGS = {
    "spatial_x2": UpsamplerConfig(mid_channels=1024, num_blocks_per_stage=4),
    "spatial_x1_5": UpsamplerConfig(mid_channels=1024, spatial_scale=1.5, rational_resampler=True),
    "temporal_x2": UpsamplerConfig(mid_channels=512, spatial_upsample=False, temporal_upsample=True),
}
VIDEO_COMPONENTS = {"vae", "vae_decoder", "vae_encoder"} | TORCH_LAYOUT_COMPONENTS
USED_STATISTICS = {"per_channel_statistics.mean", "per_channel_statistics.std"}
TORCH_CONV = {"conv3d": (0, 2, 3, 4, 1), "conv2d": (0, 2, 3, 1)}


@dataclass
class VideoPlans:
    ckpt: Checkpoint
    decoder: VideoDecoder
    decoder_plan: LoadPlan
    encoder: VideoEncoder
    encoder_plan: LoadPlan
    upscalers: dict[str, tuple[LatentUpsampler, LoadPlan]]  # by component name


def _unused_statistics(component: Component) -> list[str]:
    keys = [key for key in component.tensors if key.startswith("per_channel_statistics.")]
    unused = [key for key in keys if sanitize_decoder_key(key) is None]
    assert unused == [key for key in keys if sanitize_encoder_key(key) is None]
    return unused


def _plan_upscaler(component: Component, config: dict | None) -> tuple[LatentUpsampler, LoadPlan]:
    shapes = {key: info.shape for key, info in component.tensors.items()}
    upsampler = LatentUpsampler(UpsamplerConfig.from_config(config) if config else UpsamplerConfig.from_weights(shapes))
    plan = plan_module(upsampler, component, lambda key: key)  # `load_upsampler`'s sanitizer
    check_plan(upsampler, plan)
    assert plan.foreign_keys == []
    assert used_keys(plan) == stored_keys(component)
    return upsampler, plan


def plan_video(ckpt: Checkpoint) -> VideoPlans:
    """Plan decoder, encoder and every upscaler, and check the plans cover the stored video keys exactly."""
    config = video_vae_config(ckpt)
    decoder_component = _vae_component(ckpt, "vae_decoder")
    encoder_component = _vae_component(ckpt, "vae_encoder")
    shared = ckpt.layout is Layout.OFFICIAL
    assert (decoder_component.name, encoder_component.name) == (
        ("vae", "vae") if shared else ("vae_decoder", "vae_encoder")
    )
    decoder = VideoDecoder(config)
    decoder_plan = plan_module(decoder, decoder_component, sanitize_decoder_key)
    check_plan(decoder, decoder_plan)
    encoder = VideoEncoder(config)
    encoder_plan = plan_module(encoder, encoder_component, sanitize_encoder_key)
    check_plan(encoder, encoder_plan)

    for plan in (decoder_plan, encoder_plan):
        stats = {e.param.key for e in plan.entries if e.param.key.startswith("per_channel_statistics.")}
        assert stats == USED_STATISTICS
    unused_decoder = _unused_statistics(decoder_component)
    unused_encoder = _unused_statistics(encoder_component)
    if shared:
        both = used_keys(decoder_plan) & used_keys(encoder_plan)
        assert len(both) == 2  # mean-of-means, std-of-means
        unused = stored_keys(decoder_component, unused_decoder)
        assert stored_keys(decoder_component, decoder_plan.foreign_keys) == (used_keys(encoder_plan) - both) | unused
        assert stored_keys(encoder_component, encoder_plan.foreign_keys) == (used_keys(decoder_plan) - both) | unused
        assert used_keys(decoder_plan) | used_keys(encoder_plan) | unused == stored_keys(decoder_component)
    else:
        assert sorted(decoder_plan.foreign_keys) == sorted(unused_decoder)
        assert sorted(encoder_plan.foreign_keys) == sorted(unused_encoder)
        assert used_keys(decoder_plan) | stored_keys(decoder_component, unused_decoder) == stored_keys(
            decoder_component
        )
        assert used_keys(encoder_plan) | stored_keys(encoder_component, unused_encoder) == stored_keys(
            encoder_component
        )

    # Every upscaler component (the split repo's `upsampler` alias included), each as `load_upsampler` plans it.
    embedded = ckpt.config.get("upscalers", {})
    upscalers = {
        name: _plan_upscaler(ckpt.component(name), embedded.get(name))
        for name in ckpt.components
        if name in TORCH_LAYOUT_COMPONENTS
    }
    assert set(ckpt.components) & VIDEO_COMPONENTS == {decoder_component.name, encoder_component.name, *upscalers}
    return VideoPlans(ckpt, decoder, decoder_plan, encoder, encoder_plan, upscalers)


def _found_upscalers(ckpt: Checkpoint) -> dict[str, str]:
    """kind -> the component `find_upscaler` picks."""
    found = {kind: find_upscaler(ckpt, kind) for kind in UPSCALERS}
    return {kind: source.component.name for kind, source in found.items() if source is not None}


def _kinds(plan: LoadPlan) -> set[str]:
    return {entry.param.kind for entry in plan.entries}


def _conv_permutations(plan: LoadPlan) -> dict[str, set]:
    kinds: dict[str, set] = {}
    for entry in plan.entries:
        if entry.param.kind != "plain":
            kinds.setdefault(entry.param.kind, set()).add(entry.permutation)
    return kinds


@pytest.fixture(scope="module", params=LTX_MANIFESTS)
def manifest(request) -> dict:
    return load_manifest(request.param)


def test_manifest_video_components_plan_exactly(manifest: dict) -> None:
    ckpt = manifest_checkpoint(manifest)
    plans = plan_video(ckpt)
    version, layout = manifest["version"], manifest["layout"]
    video_keys = [key for key in manifest["tensors"] if key.startswith(("vae", "upsampler", "spatial_", "temporal_"))]
    assert sum(len(ckpt.component(name).tensors) for name in set(ckpt.components) & VIDEO_COMPONENTS) == len(video_keys)

    config = plans.decoder.config
    assert config.timestep_conditioning is False and config.causal_decoder is False
    assert "last_time_embedder" not in plans.decoder
    padding = "zeros" if version == "2.3" else None
    assert (config.decoder_padding, config.encoder_padding) == (padding or "reflect", "zeros")

    counts = {"vae_decoder": param_count(plans.decoder_plan), "vae_encoder": param_count(plans.encoder_plan)}
    counts |= {name: param_count(plan) for name, (_, plan) in plans.upscalers.items()}
    print(f"\n{layout} LTX-{version}: {counts}")
    assert counts["vae_decoder"] == DECODER_PARAMS[version]
    assert counts["vae_encoder"] == ENCODER_PARAMS[version]

    found = _found_upscalers(ckpt)
    expected_found = {
        "official": {},  # no upscaler in the file; the official upscalers are separate files, not beside it here
        "unified": {"spatial_x2": "upsampler"},
        "split": {
            "spatial_x2": "spatial_upscaler_x2_v1_1",  # newest first, before the `upsampler` alias
            "spatial_x1_5": "spatial_upscaler_x1_5_v1_0",
            "temporal_x2": "temporal_upscaler_x2_v1_0",
        },
    }[layout]
    assert found == expected_found
    for kind, name in found.items():
        upsampler, plan = plans.upscalers[name]
        assert upsampler.config == UPSCALER_CONFIGS[kind]
        assert param_count(plan) == UPSCALER_PARAMS[kind]
        # Stored raw, in PyTorch layout, by mlx_video's converter.
        assert _conv_permutations(plan) == {layer: {TORCH_CONV[layer]} for layer in _kinds(plan) - {"plain"}}
    if layout == "split":
        alias, latest = plans.upscalers["upsampler"], plans.upscalers["spatial_upscaler_x2_v1_1"]
        assert alias[0].config == latest[0].config
        assert param_count(alias[1]) == param_count(latest[1])

    # Official files are PyTorch layout; the MLX conversions store the VAE convolutions channels-last.
    vae_perm = TORCH_CONV["conv3d"] if layout == "official" else None
    for plan in (plans.decoder_plan, plans.encoder_plan):
        assert _conv_permutations(plan) == {"conv3d": {vae_perm}}

    summary = manifest["summary"]
    if layout == "official":
        for name, plan in (("vae_decoder", plans.decoder_plan), ("vae_encoder", plans.encoder_plan)):
            assert summary[name] == {"keys": len(plan.entries), "params": counts[name]}
    elif layout == "split":
        for name in counts:
            entry = summary[f"{name}.safetensors"]
            plan = {"vae_decoder": plans.decoder_plan, "vae_encoder": plans.encoder_plan}.get(name)
            plan = plan or plans.upscalers[name][1]
            assert (entry["tensors"], entry["params_or_elements"]) == (len(plan.entries), counts[name])
    else:
        per_prefix = summary["keys_per_prefix"]
        assert per_prefix["vae_decoder"] == len(plans.decoder_plan.entries)
        assert per_prefix["vae_encoder"] == len(plans.encoder_plan.entries)
        assert per_prefix["upsampler"] == len(plans.upscalers["upsampler"][1].entries)


@pytest.mark.parametrize("name", ["ltx-2-19b-official", "ltx-2.3-22b-official"])
def test_official_unused_statistics_are_foreign(name: str) -> None:
    """The statistics official files may also carry (channel, mean-of-stds, ...) are known, and read by nobody."""
    manifest = load_manifest(name)
    extras = manifest["possible_extra_tensors"]["tensors"]
    assert {key.rpartition(".")[2] for key in extras} == {
        "channel",
        "mean-of-stds",
        "mean-of-stds_over_std-of-means",
    }
    plans = plan_video(manifest_checkpoint(manifest, with_possible_extras(manifest)))
    unread = {key.removeprefix("vae.") for key in extras}
    for plan in (plans.decoder_plan, plans.encoder_plan):
        assert unread <= set(plan.foreign_keys)
        assert not unread & plan.consumed
    assert param_count(plans.decoder_plan) == DECODER_PARAMS[manifest["version"]]
    assert len(UNUSED_STATISTICS) == len(extras)


def test_unified_ltx20_uses_ltx20_vae_defaults() -> None:
    """mlx-video-with-audio's LTX-2.0 file has no embedded config: the LTX-2.0 header values apply."""
    manifest = load_manifest("ltx2-mlx-av-unified")
    assert manifest["config"] == {}
    official = manifest_checkpoint(load_manifest("ltx-2-19b-official"))
    assert video_vae_config(manifest_checkpoint(manifest)) == video_vae_config(official)
    assert video_vae_config(official) == VideoVAEConfig.from_config({"vae": official.config["vae"]})


def test_wrong_version_vae_config_is_caught() -> None:
    """The listing checks are not vacuous: the LTX-2.0 VAE planned with the LTX-2.3 config fails."""
    manifest = load_manifest("ltx2-mlx-av-unified")
    manifest["config"] = {"vae": load_manifest("ltx-2.3-22b-official")["config"]["vae"]}
    ckpt = manifest_checkpoint(manifest)
    for module, name, sanitize in (
        (VideoDecoder(video_vae_config(ckpt)), "vae_decoder", sanitize_decoder_key),
        (VideoEncoder(video_vae_config(ckpt)), "vae_encoder", sanitize_encoder_key),
    ):
        with pytest.raises(LtxError) as info:
            plan_module(module, ckpt.component(name), sanitize)
        assert info.value.code in (ErrorCode.WEIGHTS_SHAPE_MISMATCH, ErrorCode.WEIGHTS_UNEXPECTED_KEY)


# --- The q4 split repo as mlx-forge may have written it ("known_or_possible_differences_in_dgrauet_repo") ---

UPSCALER_FILES = ("spatial_upscaler_x2_v1_1", "spatial_upscaler_x1_5_v1_0", "temporal_upscaler_x2_v1_0")


def _with_component_prefix(files: dict) -> dict:
    """Every key inside a file carries its component prefix: ``vae_decoder.per_channel_statistics.mean``, ..."""
    return {file: {f"{file}.{key}": value for key, value in keys.items()} for file, keys in files.items()}


def _mlx_layout_upscalers(files: dict) -> dict:
    """Upscalers in MLX layout, Conv3d (O,I,D,H,W) -> (O,D,H,W,I) and Conv2d (O,I,H,W) -> (O,H,W,I); no alias."""
    out = {file: keys for file, keys in files.items() if file != "upsampler"}
    for file in UPSCALER_FILES:
        converted = {}
        for key, (shape, dtype) in files[file].items():
            if key.endswith(".weight") and len(shape) in (4, 5):
                shape = [shape[0], *shape[2:], shape[1]]
            converted[key] = [shape, dtype]
        out[file] = converted
    return out


def _with_unused_statistics(files: dict) -> dict:
    """The unread VAE statistics kept, in the MLX conversions' spelling (``_mean_of_stds``, ...)."""
    extra = {f"per_channel_statistics._{name}": [[128], "bfloat16"] for name in UNUSED_STATISTICS}
    return {**files, "vae_decoder": {**files["vae_decoder"], **extra}, "vae_encoder": {**files["vae_encoder"], **extra}}


VARIANTS = {
    "component_prefix": [_with_component_prefix],
    "mlx_layout_upscalers": [_mlx_layout_upscalers],
    "unused_statistics": [_with_unused_statistics],
    "all": [_mlx_layout_upscalers, _with_unused_statistics, _with_component_prefix],
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_split_repo_video_variants(variant: str) -> None:
    manifest = load_manifest("ltx-2.3-mlx-q4-split")
    assert set(manifest["known_or_possible_differences_in_dgrauet_repo"]) >= {"key_prefixes", "upscalers"}
    files = split_files(manifest["tensors"])
    for transform in VARIANTS[variant]:
        files = transform(files)
    if "upsampler" not in files:
        components = [c for c in manifest["split_manifest"]["components"] if c != "upsampler"]
        manifest["split_manifest"] = {**manifest["split_manifest"], "components": components}
    if _with_component_prefix in VARIANTS[variant]:
        assert "vae_decoder.safetensors:vae_decoder.per_channel_statistics.mean" in join_files(files)
    ckpt = manifest_checkpoint(manifest, join_files(files))
    plans = plan_video(ckpt)
    assert param_count(plans.decoder_plan) == DECODER_PARAMS["2.3"]
    assert param_count(plans.encoder_plan) == ENCODER_PARAMS["2.3"]

    unused = _with_unused_statistics in VARIANTS[variant]
    assert len(plans.decoder_plan.foreign_keys) == len(plans.encoder_plan.foreign_keys) == (3 if unused else 0)

    mlx_layout = _mlx_layout_upscalers in VARIANTS[variant]
    assert ("upsampler" in plans.upscalers) is not mlx_layout
    found = _found_upscalers(ckpt)
    assert found == dict(zip(UPSCALERS, UPSCALER_FILES, strict=True))
    for kind, name in found.items():
        upsampler, plan = plans.upscalers[name]
        assert upsampler.config == UPSCALER_CONFIGS[kind]
        assert param_count(plan) == UPSCALER_PARAMS[kind]
        layers = _kinds(plan) - {"plain"}
        assert layers == ({"conv3d"} if kind == "temporal_x2" else {"conv3d", "conv2d"})
        assert _conv_permutations(plan) == {layer: {None if mlx_layout else TORCH_CONV[layer]} for layer in layers}
