"""The generation modes (a2v, retake, keyframe interpolation, one-stage) against ltx-pipelines 1.0.0's own loops.

References: `tests/reference/make_pipeline_refs.py` (see its docstring; fixtures in `tests/fixtures/modes/`): each
pipeline stage's states, recorded noise, per-step denoised outputs and final latents on the tiny t20 / t23
transformers of `tests/fixtures/transformer`, float32. Here OUR states are built by `pipeline/modes.py` (frozen
audio, time-window masks, keyframe / image conditioning) and run through OUR `euler_loop` with `simple_denoiser` /
`guided_denoiser` in float32 on the MLX CPU stream, the recorded noise injected through `add_noise`.

Tolerances: masks and positions exact; noised initial states 1e-6 absolute; denoised outputs, final tokens and
output latents <= 1e-4 relative to the reference's peak (`tests/parity.py`). Tokens with denoise mask 0 (frozen
audio, retake outside the window, the first-frame image) must come out bit-identical to their clean latent.

Also: the audio input path (resample 44.1 -> 16 kHz, log-mel, the tiny LTX-2.3 audio encoder) against ltx-core's
``encode_audio`` (its torchaudio calls served by a torch stand-in of torchaudio's formulas: see the generator).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from parity import relative_error

from ltx_backend.models.transformer import LTXModel
from ltx_backend.pipeline import modes
from ltx_backend.pipeline import sampler as s
from ltx_backend.pipeline.audio_encode import encode_audio, resample, waveform_to_mel
from ltx_backend.pipeline.res2s import res2s_loop
from ltx_backend.pipeline.schedules import DISTILLED_STAGE_1, DISTILLED_STAGE_2, ltx2_sigmas
from ltx_backend.weights.audio import load_audio_encoder
from ltx_backend.weights.checkpoint import open_checkpoint
from ltx_backend.weights.transformer import load_transformer

FIXTURES = Path(__file__).parent / "fixtures"
TOLERANCE = 1e-4  # relative to peak
STATE_ATOL = 1e-6
VERSIONS = ("t20", "t23")
RUNS = (
    "a2v_s1",
    "a2v_s2",
    "retake_distilled",
    "retake_dev",
    "keyframe_s1",
    "keyframe_s2",
    "one_stage",
    "hq_s1",
    "hq_s2",
)
RES2S_RUNS = ("hq_s1", "hq_s2")
STG_BLOCK = 1
FPS = 24.0
AUDIO_FRAMES = 18
# The fixtures follow ltx-core 1.2.0's A<->V cross-attention timestep rule (ltx-pipelines 1.0.0 patched by
# tests/reference/ltx_core_1_2_rule.py, generated with --rule 1.2); on 1.0.0's rule every run with a conditioned
# token would differ by 3e-3 to 4e-2 of peak.


@functools.cache
def refs() -> dict[str, np.ndarray]:
    return dict(np.load(FIXTURES / "modes" / "refs.npz"))


@functools.cache
def model(version: str) -> LTXModel:
    return load_transformer(open_checkpoint(FIXTURES / "transformer" / f"{version}_official"), mx.float32)


@pytest.fixture(autouse=True)
def cpu_stream() -> Iterator[None]:
    with mx.stream(mx.cpu):
        yield


def inp(name: str) -> mx.array:
    return mx.array(refs()[f"inputs.{name}"])


def sigmas(run: str) -> tuple[float, ...] | np.ndarray:
    if run == "hq_s1":  # shifted by the stage's own token count (18), as the HQ pipeline schedules
        return ltx2_sigmas(4, 18)
    if run in ("a2v_s2", "keyframe_s2", "hq_s2"):
        return DISTILLED_STAGE_2
    return DISTILLED_STAGE_1 if run == "retake_distilled" else ltx2_sigmas(4)


def image() -> modes.Image:
    return modes.Image(inp("image_latent"), 0, 1.0)


def initial_states(version: str, run: str) -> tuple[s.LatentState, s.LatentState]:
    """Each run's states as the engine will build them for its mode, then the recorded noise."""
    r = refs()
    fresh_video = s.video_state(mx.zeros(inp("source_video").shape), FPS)
    fresh_audio = s.audio_state(mx.zeros(inp("source_audio").shape))
    windows = [float(v) for v in r["inputs.windows"]]
    key_index, key_strength = (float(v) for v in r["inputs.keyframe"])
    keyframes = [image(), modes.Image(inp("keyframe_latent"), int(key_index), 1.0)]
    if run == "a2v_s1":
        video = modes.image_conditioning(fresh_video, [image()], FPS)
        audio = modes.frozen_audio_state(inp("encoded_audio"))
    elif run == "a2v_s2":
        video = modes.image_conditioning(s.video_state(inp("upsampled_video"), FPS), [image()], FPS)
        audio = modes.frozen_audio_state(inp("encoded_audio"))
    elif run == "retake_distilled":
        start, end = windows[:2]
        video = modes.retake_video_state(inp("source_video"), FPS, start, end)
        audio = modes.retake_audio_state(inp("source_audio"), AUDIO_FRAMES, start, end)
    elif run == "retake_dev":
        start, end = windows[2:]
        video = modes.retake_video_state(inp("source_video"), FPS, start, end)
        audio = modes.retake_audio_state(inp("source_audio"), AUDIO_FRAMES, start, end, regenerate=False)
    elif run == "keyframe_s1":
        video, audio = modes.keyframe_conditioning(fresh_video, keyframes, FPS), fresh_audio
    elif run == "keyframe_s2":
        video = modes.keyframe_conditioning(s.video_state(inp("upsampled_video"), FPS), keyframes, FPS)
        audio = s.audio_state(inp("stage2_audio"))
    elif run == "hq_s2":
        video = modes.image_conditioning(s.video_state(inp("upsampled_video"), FPS), [image()], FPS)
        audio = s.audio_state(inp("stage2_audio"))
    else:  # one_stage, hq_s1
        extra = modes.Image(inp("keyframe_latent"), int(key_index), key_strength)
        video, audio = modes.image_conditioning(fresh_video, [image(), extra], FPS), fresh_audio
    scale = float(sigmas(run)[0]) if run.endswith("_s2") else 1.0
    video = s.add_noise(video, mx.array(r[f"{version}.{run}.noise.video"]), scale)
    audio = s.add_noise(audio, mx.array(r[f"{version}.{run}.noise.audio"]), 0.0 if run.startswith("a2v") else scale)
    return video, audio


def denoiser(version: str, run: str, video: s.LatentState, audio: s.LatentState) -> s.DenoiseFn:
    t = dict(np.load(FIXTURES / "transformer" / "refs.npz"))
    v_ctx, a_ctx = (mx.array(t[f"{version}.text.{n}_context"]) for n in ("video", "audio"))
    stage = s.StageInputs.build(model(version), video, audio, v_ctx, a_ctx, mx.float32)
    if run in ("a2v_s2", "keyframe_s2", "retake_distilled", "hq_s2"):
        return s.simple_denoiser(stage)
    sampler_refs = np.load(FIXTURES / "sampler" / "refs.npz")
    v_neg, a_neg = (mx.array(sampler_refs[f"inputs.{version}.negative_{n}_context"]) for n in ("video", "audio"))
    video_params, audio_params = modes.default_guidance(STG_BLOCK)
    if run == "a2v_s1":  # neutral audio guider without a negative context: its uncond pass uses the positive one
        audio_params, a_neg = replace(modes.A2V_AUDIO_GUIDANCE), a_ctx
    if run == "hq_s1":
        video_params, audio_params = modes.HQ_VIDEO_GUIDANCE, modes.HQ_AUDIO_GUIDANCE
    return s.guided_denoiser(stage, v_neg, a_neg, video_params, audio_params)


@functools.cache
def denoise_run(version: str, run: str):
    video, audio = initial_states(version, run)
    denoise = denoiser(version, run, video, audio)
    recorded = []

    def recording(v, a, sigma):
        out = denoise(v, a, sigma)
        recorded.append(out)
        return out

    if run in RES2S_RUNS:
        video, audio = res2s_loop(sigmas(run), video, audio, recording, recorded_sde_noise(version, run))
    else:
        video, audio = s.euler_loop(sigmas(run), video, audio, recording)
    return recorded, video, audio


def recorded_sde_noise(version: str, run: str):
    """The reference's SDE draws in its order: per step and stream, the substep draw, then the step draw."""
    draws = {name: iter(refs()[f"{version}.{run}.sde_noise.{name}"]) for name in ("video", "audio")}

    def noise(generator: str, stream: str, shape: tuple[int, ...]) -> mx.array:
        value = next(draws[stream])
        assert value.shape == shape, (generator, stream, value.shape, shape)
        return mx.array(value)

    return noise


@pytest.mark.parametrize("run", RUNS)
@pytest.mark.parametrize("version", VERSIONS)
def test_initial_states_match(version: str, run: str) -> None:
    r, prefix = refs(), f"{version}.{run}.state"
    for name, state in zip(("video", "audio"), initial_states(version, run), strict=True):
        label = f"{version}.{run} {name}"
        mask = np.array(state.denoise_mask)[..., None]
        np.testing.assert_array_equal(mask, r[f"{prefix}.{name}_denoise_mask"], err_msg=f"{label} denoise mask")
        np.testing.assert_array_equal(state.positions, r[f"{prefix}.{name}_positions"], err_msg=f"{label} positions")
        for what, ours in (("latent", state.latent), ("clean_latent", state.clean)):
            error = float(np.abs(np.array(ours) - r[f"{prefix}.{name}_{what}"]).max())
            assert error <= STATE_ATOL, f"{label} {what}: {error:.3g}"
        assert state.unconditioned == bool((mask == 1).all()), f"{label}: unconditioned flag"


@pytest.mark.parametrize("run", RUNS)
@pytest.mark.parametrize("version", VERSIONS)
def test_denoised_and_final_latents_match(version: str, run: str) -> None:
    r, prefix = refs(), f"{version}.{run}"
    recorded, video, audio = denoise_run(version, run)
    steps = len(sigmas(run)) - 1
    assert len(recorded) == (2 * steps + 1 if run in RES2S_RUNS else steps)  # res_2s: step, midpoint; final
    for step, (out_video, out_audio) in enumerate(recorded):
        for name, ours in (("video", out_video), ("audio", out_audio)):
            error = relative_error(ours, r[f"{prefix}.denoised.{name}"][step])
            assert error <= TOLERANCE, f"{prefix} step {step} denoised {name}: {error:.3g} of peak"
    for name, state in (("video", video), ("audio", audio)):
        error = relative_error(state.latent, r[f"{prefix}.final_tokens.{name}"])
        assert error <= TOLERANCE, f"{prefix} final {name} tokens: {error:.3g} of peak"
        kept = np.array(state.denoise_mask[0]) == 0  # never moved: bit-identical to the clean latent
        np.testing.assert_array_equal(np.array(state.latent)[0][kept], np.array(state.clean)[0][kept])
    _, _, frames, height, width = r[f"{prefix}.out.video_latent"].shape
    out_video = s.tokens_to_video(video.output_latent, frames, height, width)
    assert relative_error(out_video, r[f"{prefix}.out.video_latent"]) <= TOLERANCE
    if f"{prefix}.out.audio_latent" in r:
        out_audio = s.tokens_to_audio(audio.output_latent, r[f"{prefix}.out.audio_latent"].shape[1])
        assert relative_error(out_audio, r[f"{prefix}.out.audio_latent"]) <= TOLERANCE
    else:  # a2v: the audio is the encoded soundtrack, untouched
        np.testing.assert_array_equal(np.array(audio.latent), np.array(s.audio_to_tokens(inp("encoded_audio"))))


# ----------------------------------------------------------------------------------------------- audio input


def test_resample_matches_torchaudio_formula() -> None:
    r = refs()
    ours = resample(r["audio.waveform"], 44100, 16000)
    assert ours.shape == r["audio.resampled"].shape
    assert float(np.abs(ours - r["audio.resampled"]).max()) <= 1e-5


def test_log_mel_and_audio_latent_match_ltx_core_encode_audio() -> None:
    r = refs()
    encoder = load_audio_encoder(open_checkpoint(FIXTURES / "audio" / "ltx23_official"))
    mel = waveform_to_mel(r["audio.waveform"], 44100, encoder)
    assert mel.shape == r["audio.mel"].shape
    assert float(np.abs(mel - r["audio.mel"]).max()) <= 1e-3  # log scale: float32 FFT order, |log mel| up to ~11
    latent = encode_audio(r["audio.waveform"], 44100, encoder)
    assert relative_error(latent, r["audio.latent"]) <= TOLERANCE
