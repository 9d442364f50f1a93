"""The audio loaders against the key listings of the real LTX-2 checkpoints, without their weights.

For each manifest (official LTX-2.0 / LTX-2.3, mlx-video-with-audio's LTX-2.0 unified file, the LTX-2.3 q4 split
repo) a data-less checkpoint is built from the listing, the full-size audio modules are built from its config, and
the load is planned: every stored audio tensor must feed exactly one parameter (or the sibling module's), every
parameter must be fed, and the shapes must agree after the planned permutation. The split repo's known or possible
differences (mlx-forge spellings and layouts) are synthesized from the listing and must plan too.
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
)

from ltx_backend.errors import ErrorCode, LtxError
from ltx_backend.models.audio_vae import AudioDecoder, AudioEncoder, sanitize_decoder_key, sanitize_encoder_key
from ltx_backend.models.bwe import VocoderWithBWE
from ltx_backend.models.vocoder import Vocoder
from ltx_backend.weights.audio import audio_vae_config, build_vocoder, vocoder_sanitizer
from ltx_backend.weights.checkpoint import Checkpoint, Component
from ltx_backend.weights.load import plan_module
from ltx_backend.weights.plan import LoadPlan

# Parameter counts of the real modules (manifest summaries: ltx_core modules built on the meta device).
DECODER_PARAMS = 31_915_394
ENCODER_PARAMS = 21_333_264
VOCODER_PARAMS = {"2.0": 55_592_802, "2.3": 129_085_032}
AUDIO_COMPONENTS = ("audio_vae", "vocoder")
STATS_KEYS = {"per_channel_statistics.mean", "per_channel_statistics.std"}


@dataclass
class AudioPlans:
    ckpt: Checkpoint
    decoder: AudioDecoder
    decoder_plan: LoadPlan
    encoder: AudioEncoder | None
    encoder_plan: LoadPlan | None
    vocoder: Vocoder | VocoderWithBWE
    vocoder_plan: LoadPlan


def _has_encoder(component: Component) -> bool:
    return any(sanitize_encoder_key(key) not in (None, *STATS_KEYS) for key in component.tensors)


def plan_audio(ckpt: Checkpoint) -> AudioPlans:
    """Plan decoder, encoder (where stored) and vocoder, and check the plans cover the stored audio keys exactly."""
    audio = ckpt.component("audio_vae")
    config = audio_vae_config(ckpt)
    decoder = AudioDecoder(config)
    decoder_plan = plan_module(decoder, audio, sanitize_decoder_key)
    check_plan(decoder, decoder_plan)
    encoder = encoder_plan = None
    if _has_encoder(audio):
        encoder = AudioEncoder(config)
        encoder_plan = plan_module(encoder, audio, sanitize_encoder_key)
        check_plan(encoder, encoder_plan)
        shared = used_keys(decoder_plan) & used_keys(encoder_plan)
        assert {key for key in audio.tensors if sanitize_decoder_key(key) in STATS_KEYS} == {
            key for key in audio.tensors if sanitize_encoder_key(key) in STATS_KEYS
        }
        assert shared == stored_keys(audio, [k for k in audio.tensors if sanitize_decoder_key(k) in STATS_KEYS])
        assert len(shared) == 2
        assert stored_keys(audio, decoder_plan.foreign_keys) == used_keys(encoder_plan) - shared
        assert stored_keys(audio, encoder_plan.foreign_keys) == used_keys(decoder_plan) - shared
        assert used_keys(decoder_plan) | used_keys(encoder_plan) == stored_keys(audio)
    else:
        assert decoder_plan.foreign_keys == []
        assert used_keys(decoder_plan) == stored_keys(audio)

    vocoder_component = ckpt.component("vocoder")
    vocoder = build_vocoder(ckpt)
    vocoder_plan = plan_module(vocoder, vocoder_component, vocoder_sanitizer(vocoder))
    check_plan(vocoder, vocoder_plan)
    assert vocoder_plan.foreign_keys == []
    assert used_keys(vocoder_plan) == stored_keys(vocoder_component)
    return AudioPlans(ckpt, decoder, decoder_plan, encoder, encoder_plan, vocoder, vocoder_plan)


@pytest.fixture(scope="module", params=LTX_MANIFESTS)
def manifest(request) -> dict:
    return load_manifest(request.param)


def test_manifest_audio_components_plan_exactly(manifest: dict) -> None:
    ckpt = manifest_checkpoint(manifest)
    assert {"audio_vae", "vocoder"} <= set(ckpt.components)  # beside the video components
    plans = plan_audio(ckpt)
    stored = sum(len(ckpt.component(name).tensors) for name in AUDIO_COMPONENTS)
    assert stored == len([key for key in manifest["tensors"] if key.startswith(AUDIO_COMPONENTS)])

    # The real configs: no attention anywhere in the audio VAE (mid_block_add_attention false, no attn levels).
    assert plans.decoder.config.mid_block_add_attention is False
    assert "attn_1" not in plans.decoder.mid
    assert not [e.param.key for e in plans.decoder_plan.entries if "attn" in e.param.key]
    assert plans.decoder.config.mel_bins == 64 and plans.decoder.config.causality_axis == "height"

    version = manifest["version"]
    if version == "2.0":
        assert type(plans.vocoder) is Vocoder
        assert plans.vocoder.config.resblock == "1"
        assert plans.vocoder.output_sampling_rate == 24_000
    else:
        assert isinstance(plans.vocoder, VocoderWithBWE)
        assert plans.vocoder.vocoder.config.resblock == "AMP1"
        assert plans.vocoder.config.input_sampling_rate == 16_000
        assert plans.vocoder.output_sampling_rate == 48_000

    counts = {"audio_vae_decoder": param_count(plans.decoder_plan), "vocoder": param_count(plans.vocoder_plan)}
    if plans.encoder_plan is not None:
        counts["audio_vae_encoder"] = param_count(plans.encoder_plan)
    print(f"\n{manifest['layout']} LTX-{version}: {counts}")
    assert counts["audio_vae_decoder"] == DECODER_PARAMS
    assert counts["vocoder"] == VOCODER_PARAMS[version]
    assert counts.get("audio_vae_encoder", ENCODER_PARAMS) == ENCODER_PARAMS
    # The official files hold the encoder; the MLX conversions of these manifests the decoder only.
    assert (plans.encoder_plan is not None) == (manifest["layout"] == "official")

    summary = manifest["summary"]
    if manifest["layout"] == "official":
        for name, plan in (("audio_vae_decoder", plans.decoder_plan), ("audio_vae_encoder", plans.encoder_plan)):
            assert summary[name] == {"keys": len(plan.entries), "params": counts[name]}
        assert summary["vocoder"] == {"keys": len(plans.vocoder_plan.entries), "params": counts["vocoder"]}
    elif manifest["layout"] == "split":
        for file, plan in (("audio_vae", plans.decoder_plan), ("vocoder", plans.vocoder_plan)):
            entry = summary[f"{file}.safetensors"]
            assert entry["tensors"] == len(plan.entries)
            assert entry["params_or_elements"] == param_count(plan)
    else:
        per_prefix = {name: summary["keys_per_prefix"][name] for name in AUDIO_COMPONENTS}
        assert per_prefix == {"audio_vae": len(plans.decoder_plan.entries), "vocoder": len(plans.vocoder_plan.entries)}


def test_unified_ltx20_uses_ltx20_defaults() -> None:
    """mlx-video-with-audio's LTX-2.0 file has no embedded config: the LTX-2.0 header values apply."""
    manifest = load_manifest("ltx2-mlx-av-unified")
    assert manifest["config"] == {} and manifest["model_info"]
    official = load_manifest("ltx-2-19b-official")
    ckpt = manifest_checkpoint(manifest)
    official_ckpt = manifest_checkpoint(official)
    assert audio_vae_config(ckpt) == audio_vae_config(official_ckpt)
    assert build_vocoder(ckpt).config == build_vocoder(official_ckpt).config


def test_layouts_of_the_conversions() -> None:
    """Official files are PyTorch layout; the MLX conversions store convolutions channels-last."""
    kinds = {}
    for name in LTX_MANIFESTS:
        plans = plan_audio(manifest_checkpoint(load_manifest(name)))
        for plan in (plans.decoder_plan, plans.vocoder_plan):
            for entry in plan.entries:
                if entry.param.kind != "plain":
                    kinds.setdefault(name, set()).add((entry.param.kind, entry.permutation))
    assert kinds["ltx-2-19b-official"] == {
        ("conv2d", (0, 2, 3, 1)),
        ("conv1d", (0, 2, 1)),
        ("conv_transpose1d", (1, 2, 0)),
    }
    assert kinds["ltx-2.3-22b-official"] == kinds["ltx-2-19b-official"]
    mlx = {("conv2d", None), ("conv1d", None), ("conv_transpose1d", None)}
    assert kinds["ltx2-mlx-av-unified"] == mlx
    assert kinds["ltx-2.3-mlx-q4-split"] == mlx


# --- The q4 split repo as mlx-forge may have written it ("known_or_possible_differences_in_dgrauet_repo") ---


def _with_component_prefix(files: dict) -> dict:
    """(a) every key inside a file carries its component prefix: ``audio_vae.xxx``, ``vocoder.xxx`` (all files)."""
    return {file: {f"{file}.{key}": value for key, value in keys.items()} for file, keys in files.items()}


def _with_encoder(files: dict) -> dict:
    """(b) audio_vae keeps ``decoder.`` and includes the encoder (``encoder.``), in MLX Conv2d layout (O,H,W,I)."""
    official = load_manifest("ltx-2.3-22b-official")["tensors"]
    audio = {}
    for key, value in files["audio_vae"].items():
        audio[key if key.startswith("per_channel_statistics.") else f"decoder.{key}"] = value
    for key, (shape, dtype) in official.items():
        if key.startswith("audio_vae.encoder."):
            if len(shape) == 4:  # PyTorch (O, I, H, W) -> MLX (O, H, W, I)
                shape = [shape[0], shape[2], shape[3], shape[1]]
            audio[key.removeprefix("audio_vae.")] = [shape, dtype]
    return {**files, "audio_vae": audio}


def _torch_conv_transpose(files: dict) -> dict:
    """(c) vocoder ``ups.*`` and ``bwe_generator.ups.*`` stored PyTorch ConvTranspose1d (in, out, K)."""
    vocoder = {}
    for key, (shape, dtype) in files["vocoder"].items():
        if key.startswith(("ups.", "bwe_generator.ups.")) and key.endswith(".weight"):
            out, k, in_ = shape
            shape = [in_, out, k]
        vocoder[key] = [shape, dtype]
    return {**files, "vocoder": vocoder}


def _kernel_last_buffers(files: dict) -> dict:
    """(d) Activation1d filters stored (1, 12, 1), mel_stft bases (514, 512, 1)."""
    vocoder = {}
    for key, (shape, dtype) in files["vocoder"].items():
        if key.endswith(".filter"):
            assert shape == [1, 1, 12]
            shape = [1, 12, 1]
        elif key.endswith(("forward_basis", "inverse_basis")):
            assert shape == [514, 1, 512]
            shape = [514, 512, 1]
        vocoder[key] = [shape, dtype]
    return {**files, "vocoder": vocoder}


VARIANTS = {
    "component_prefix": [_with_component_prefix],
    "decoder_and_encoder": [_with_encoder],
    "torch_conv_transpose": [_torch_conv_transpose],
    "kernel_last_buffers": [_kernel_last_buffers],
    "all": [_with_encoder, _torch_conv_transpose, _kernel_last_buffers, _with_component_prefix],
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_split_repo_variants(variant: str) -> None:
    manifest = load_manifest("ltx-2.3-mlx-q4-split")
    assert set(manifest["known_or_possible_differences_in_dgrauet_repo"]) >= {"key_prefixes", "audio_vae", "vocoder"}
    files = split_files(manifest["tensors"])
    for transform in VARIANTS[variant]:
        files = transform(files)
    ckpt = manifest_checkpoint(manifest, join_files(files))
    plans = plan_audio(ckpt)
    assert param_count(plans.decoder_plan) == DECODER_PARAMS
    assert param_count(plans.vocoder_plan) == VOCODER_PARAMS["2.3"]

    with_encoder = _with_encoder in VARIANTS[variant]
    assert (plans.encoder_plan is not None) == with_encoder
    if with_encoder:
        assert param_count(plans.encoder_plan) == ENCODER_PARAMS
        assert {e.permutation for e in plans.encoder_plan.entries if e.param.kind == "conv2d"} == {None}
    torch_ups = _torch_conv_transpose in VARIANTS[variant]
    ups = [e for e in plans.vocoder_plan.entries if e.param.kind == "conv_transpose1d"]
    assert len(ups) == 6 + 5  # 16 kHz generator + BWE generator
    assert {e.permutation for e in ups} == {(1, 2, 0) if torch_ups else None}
    assert {e.permutation for e in plans.vocoder_plan.entries if e.param.kind == "conv1d"} == {None}


def test_wrong_version_config_is_caught() -> None:
    """The listing checks are not vacuous: the LTX-2.0 listing planned with the LTX-2.3 config fails."""
    manifest = load_manifest("ltx2-mlx-av-unified")
    manifest["config"] = load_manifest("ltx-2.3-22b-official")["config"]
    ckpt = manifest_checkpoint(manifest)
    plan_audio_decoder_only = plan_module(
        AudioDecoder(audio_vae_config(ckpt)), ckpt.component("audio_vae"), sanitize_decoder_key
    )
    assert param_count(plan_audio_decoder_only) == DECODER_PARAMS  # same audio VAE in 2.0 and 2.3
    vocoder = build_vocoder(ckpt)
    with pytest.raises(LtxError) as info:
        plan_module(vocoder, ckpt.component("vocoder"), vocoder_sanitizer(vocoder))
    assert info.value.code is ErrorCode.WEIGHTS_SHAPE_MISMATCH
