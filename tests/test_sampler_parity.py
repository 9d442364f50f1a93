"""The sampler (states, conditioning, noising, Euler loop, guidance) and sigma schedules against ltx-pipelines 1.0.0
patched to ltx-core 1.2.0's audio<->video cross-attention AdaLN timestep rule.

References come from `tests/reference/make_sampler_refs.py` (see `tests/fixtures/sampler/README.md`), with ltx-core
1.0.0 under `tests/reference/ltx_core_1_2_rule.py` (checked there to reproduce ltx-core 1.2.0's own fixture): the
pipelines' own `denoise_audio_video` runs with the tiny t20 / t23 transformers of `tests/fixtures/transformer`
in float32 on CPU, every random draw recorded. Here the same transformers run in float32 on the MLX CPU stream,
the recorded noise is injected through `add_noise`, and for each version and run

- `distilled_s1`: `DISTILLED_STAGE_1`, first-frame image (`condition_by_latent_index`) + keyframe at pixel frame 16
  (`condition_by_keyframe`, strength 0.75, appended tokens), `simple_denoiser`;
- `distilled_s2`: `DISTILLED_STAGE_2` from a given video latent and the stage-1 audio, noise scale = first sigma,
  first-frame image, `simple_denoiser`;
- `dev_s1`: `ltx2_sigmas(4)`, `guided_denoiser` with `VIDEO_GUIDANCE` / `AUDIO_GUIDANCE` (STG block 1): CFG with
  negative contexts, STG, modality isolation, rescale;

we compare the noised initial states (latent, clean latent, denoise mask, positions), every step's denoised output
(before post-processing; the guided one for `dev_s1`, and its four step-0 forwards), the final tokens (appended
keyframe tokens included) and the cleared, unpatchified outputs.

Tolerances (absolute, float32):
- schedules (`ltx2_sigmas` for 1, 4, 8, 30, 40 steps at 4096 / 1536 / 6144 tokens, the distilled tables): bit for
  bit, NaN == NaN (`steps=1` is degenerate in ltx-core: `[0.1, 0]` at 4096 tokens, `[nan, 0]` at 1536 / 6144);
- positions and denoise masks: exact; noised initial states: 1e-6 (elementwise arithmetic only);
- denoised outputs, step-0 guidance forwards, final tokens, outputs: 1e-4 (`ATOL`); measured at most 6e-6
  (guided `dev_s1` denoised) and 4e-6 (distilled runs); the noised states, masks and positions match exactly;
- tokens with denoise mask 0 (the first-frame image) must come out exactly equal to the image latent.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from cycles import cyclic_garbage_after

from ltx_backend.models.transformer import LTXModel, Perturbations
from ltx_backend.pipeline import sampler as s
from ltx_backend.pipeline.schedules import DISTILLED_STAGE_1, DISTILLED_STAGE_2, ltx2_sigmas
from ltx_backend.weights.checkpoint import open_checkpoint
from ltx_backend.weights.transformer import load_transformer

FIXTURES = Path(__file__).parent / "fixtures"
ATOL = 1e-4  # model outputs and everything downstream of them
STATE_ATOL = 1e-6  # noised initial states
VERSIONS = ("t20", "t23")
RUNS = ("distilled_s1", "distilled_s2", "dev_s1")
STG_BLOCK = 1  # the tiny models have 2 blocks (the real ones use 29 / 28)
IMAGE_TOKENS = 6  # one latent frame of 2 x 3 cells


@functools.cache
def refs() -> dict[str, np.ndarray]:
    return dict(np.load(FIXTURES / "sampler" / "refs.npz"))


@functools.cache
def text_refs() -> dict[str, np.ndarray]:
    return dict(np.load(FIXTURES / "transformer" / "refs.npz"))


@functools.cache
def model(version: str) -> LTXModel:
    return load_transformer(open_checkpoint(FIXTURES / "transformer" / f"{version}_official"), mx.float32)


@pytest.fixture(autouse=True)
def cpu_stream() -> Iterator[None]:
    with mx.stream(mx.cpu):
        yield


def check(label: str, ours: mx.array | np.ndarray, reference: np.ndarray, atol: float = ATOL) -> float:
    ours_np = np.array(ours.astype(mx.float32) if isinstance(ours, mx.array) else ours)
    assert ours_np.shape == reference.shape, f"{label}: shape {ours_np.shape} != reference {reference.shape}"
    error = float(np.abs(ours_np - reference).max())
    assert error <= atol, f"{label}: max |ours - reference| = {error:.3g} > {atol:g}"
    return error


# ---------------------------------------------------------------------------------------------------- schedules


@pytest.mark.parametrize("steps", [1, 4, 8, 30, 40])
@pytest.mark.parametrize("tokens", [4096, 1536, 6144])
def test_ltx2_sigmas_match_ltx2_scheduler(steps: int, tokens: int) -> None:
    key = f"schedule.steps{steps}" + ("" if tokens == 4096 else f".tokens{tokens}")
    ours = ltx2_sigmas(steps, tokens)
    assert ours.dtype == np.float32, f"{key}: dtype {ours.dtype}"
    # bit for bit; NaN == NaN (steps=1 at 1536 / 6144 tokens is [nan, 0] in ltx-core as well)
    np.testing.assert_array_equal(ours, refs()[key], err_msg=f"ltx2_sigmas({steps}, {tokens}) != {key}")


def test_default_token_count_and_distilled_tables() -> None:
    r = refs()
    np.testing.assert_array_equal(ltx2_sigmas(4), r["schedule.steps4"], err_msg="ltx2_sigmas default tokens")
    np.testing.assert_array_equal(ltx2_sigmas(4), r["t20.dev_s1.sigmas"], err_msg="dev_s1 sigmas")
    np.testing.assert_array_equal(np.float32(DISTILLED_STAGE_1), r["sigmas.distilled"], err_msg="DISTILLED_STAGE_1")
    np.testing.assert_array_equal(np.float32(DISTILLED_STAGE_2), r["sigmas.stage2_distilled"], err_msg="STAGE_2")


# ------------------------------------------------------------------------------------------------------ states


def _sigmas(version: str, run: str) -> tuple[float, ...] | np.ndarray:
    return {"distilled_s1": DISTILLED_STAGE_1, "distilled_s2": DISTILLED_STAGE_2, "dev_s1": ltx2_sigmas(4)}[run]


def initial_states(version: str, run: str) -> tuple[s.LatentState, s.LatentState]:
    """What `denoise_audio_video` builds: state, conditionings, then the recorded noise."""
    r = refs()
    fps = float(r["inputs.fps"][0])
    _, channels, frames, height, width = (int(v) for v in r["inputs.video_latent_shape"])
    audio_shape = tuple(int(v) for v in r["inputs.audio_latent_shape"])
    if run == "distilled_s2":
        video = s.video_state(mx.array(r["inputs.stage2_initial_video_latent"]), fps)
        audio = s.audio_state(mx.array(r[f"{version}.distilled_s2.initial_audio_latent"]))
    else:
        video = s.video_state(mx.zeros((1, channels, frames, height, width)), fps)
        assert s.audio_latent_frames(int(r["inputs.output_shape"][1]), fps) == audio_shape[2], "audio latent frames"
        audio = s.audio_state(mx.zeros(audio_shape))
    if run != "dev_s1":
        video = s.condition_by_latent_index(video, mx.array(r["inputs.image_latent"]), 1.0, 0)
    if run == "distilled_s1":
        frame_index, strength = (float(v) for v in r["inputs.keyframe"])
        video = s.condition_by_keyframe(video, mx.array(r["inputs.keyframe_latent"]), int(frame_index), strength, fps)
    scale = float(_sigmas(version, run)[0]) if run == "distilled_s2" else 1.0
    video = s.add_noise(video, mx.array(r[f"{version}.{run}.noise.video"]), scale)
    audio = s.add_noise(audio, mx.array(r[f"{version}.{run}.noise.audio"]), scale)
    return video, audio


@pytest.mark.parametrize("run", RUNS)
@pytest.mark.parametrize("version", VERSIONS)
def test_initial_states_match(version: str, run: str) -> None:
    r, prefix = refs(), f"{version}.{run}.state"
    for name, state in zip(("video", "audio"), initial_states(version, run), strict=True):
        label = f"{version}.{run} {name}"
        check(f"{label} noised latent", state.latent, r[f"{prefix}.{name}_latent"], STATE_ATOL)
        check(f"{label} clean latent", state.clean, r[f"{prefix}.{name}_clean_latent"], STATE_ATOL)
        check(f"{label} denoise mask", state.denoise_mask[..., None], r[f"{prefix}.{name}_denoise_mask"], 0.0)
        check(f"{label} positions", state.positions, r[f"{prefix}.{name}_positions"], 0.0)
    video, audio = initial_states(version, run)
    assert video.generated_tokens == 18, f"{version}.{run}: generated video tokens {video.generated_tokens}"
    assert audio.generated_tokens == 18, f"{version}.{run}: generated audio tokens {audio.generated_tokens}"


# -------------------------------------------------------------------------------------------------- denoising


def guidance() -> tuple[s.GuidanceParams, s.GuidanceParams]:
    return replace(s.VIDEO_GUIDANCE, stg_blocks=(STG_BLOCK,)), replace(s.AUDIO_GUIDANCE, stg_blocks=(STG_BLOCK,))


def stage_inputs(version: str, video: s.LatentState, audio: s.LatentState) -> s.StageInputs:
    t = text_refs()
    video_context, audio_context = (mx.array(t[f"{version}.text.{n}_context"]) for n in ("video", "audio"))
    return s.StageInputs.build(model(version), video, audio, video_context, audio_context, mx.float32)


@dataclass
class Result:
    denoised: list[tuple[mx.array, mx.array]]
    video: s.LatentState
    audio: s.LatentState


@functools.cache
def denoise_run(version: str, run: str) -> Result:
    video, audio = initial_states(version, run)
    stage = stage_inputs(version, video, audio)
    if run == "dev_s1":
        negative = (mx.array(refs()[f"inputs.{version}.negative_{n}_context"]) for n in ("video", "audio"))
        denoise = s.guided_denoiser(stage, *negative, *guidance())
    else:
        denoise = s.simple_denoiser(stage)
    recorded: list[tuple[mx.array, mx.array]] = []

    def recording(v: s.LatentState, a: s.LatentState | None, sigma: float) -> tuple[mx.array, mx.array | None]:
        out = denoise(v, a, sigma)
        recorded.append(out)
        return out

    video, audio = s.euler_loop(_sigmas(version, run), video, audio, recording)
    return Result(recorded, video, audio)


@pytest.mark.parametrize("version", VERSIONS)
def test_guidance_forwards_at_step_0(version: str) -> None:
    """The four forwards the multi-modal guider combines: cond, uncond, STG-perturbed, modality-isolated."""
    r = refs()
    video, audio = initial_states(version, "dev_s1")
    stage = stage_inputs(version, video, audio)
    sigma = float(r[f"{version}.dev_s1.sigmas"][0])
    negative = {n: mx.array(r[f"inputs.{version}.negative_{n}_context"]) for n in ("video", "audio")}
    stg = Perturbations(
        skip_video_self_attention=frozenset({STG_BLOCK}), skip_audio_self_attention=frozenset({STG_BLOCK})
    )
    forwards = {
        "cond": s.x0_forward(stage, video, audio, sigma),
        "uncond": s.x0_forward(stage, video, audio, sigma, negative["video"], negative["audio"]),
        "perturbed": s.x0_forward(stage, video, audio, sigma, perturbations=stg),
        "isolated": s.x0_forward(stage, video, audio, sigma, perturbations=Perturbations(skip_cross_modal=True)),
    }
    for name, (out_video, out_audio) in forwards.items():
        check(f"{version}.dev_s1 step 0 {name} video", out_video, r[f"{version}.dev_s1.step0.{name}.video"])
        check(f"{version}.dev_s1 step 0 {name} audio", out_audio, r[f"{version}.dev_s1.step0.{name}.audio"])


@pytest.mark.parametrize("run", RUNS)
@pytest.mark.parametrize("version", VERSIONS)
def test_denoised_per_step_match(version: str, run: str) -> None:
    r, result = refs(), denoise_run(version, run)
    steps = len(_sigmas(version, run)) - 1
    assert len(result.denoised) == steps, f"{version}.{run}: {len(result.denoised)} denoise calls, expected {steps}"
    for step, (out_video, out_audio) in enumerate(result.denoised):
        check(f"{version}.{run} step {step} denoised video", out_video, r[f"{version}.{run}.denoised.video"][step])
        check(f"{version}.{run} step {step} denoised audio", out_audio, r[f"{version}.{run}.denoised.audio"][step])


@pytest.mark.parametrize("run", RUNS)
@pytest.mark.parametrize("version", VERSIONS)
def test_final_latents_match(version: str, run: str) -> None:
    r, result, prefix = refs(), denoise_run(version, run), f"{version}.{run}"
    check(f"{prefix} final video tokens", result.video.latent, r[f"{prefix}.final_tokens.video"])
    check(f"{prefix} final audio tokens", result.audio.latent, r[f"{prefix}.final_tokens.audio"])
    _, _, frames, height, width = r[f"{prefix}.out.video_latent"].shape
    out_video = s.tokens_to_video(result.video.output_latent, frames, height, width)  # keyframe tokens dropped
    out_audio = s.tokens_to_audio(result.audio.output_latent, r[f"{prefix}.out.audio_latent"].shape[1])
    check(f"{prefix} output video latent", out_video, r[f"{prefix}.out.video_latent"])
    check(f"{prefix} output audio latent", out_audio, r[f"{prefix}.out.audio_latent"])
    if run != "dev_s1":  # mask-0 tokens never move: the first latent frame is the image latent, bit for bit
        image = np.array(out_video[:, :, :1])
        np.testing.assert_array_equal(image, r["inputs.image_latent"], err_msg=f"{prefix} first frame != image latent")


@pytest.mark.parametrize("model", ["t20", "t23"])
def test_compiled_forward_matches_the_eager_one(model: str) -> None:
    """GPUs run the blocks through one shared mx.compile trace; traced and eager results agree (fp32, CPU), with
    every perturbation, and each (shapes, flags) signature is traced once for the whole stack."""
    video, audio = initial_states(model, "distilled_s2")
    eager = stage_inputs(model, video, audio)
    traced = s.StageInputs.build(eager.model, video, audio, eager.video_context, eager.audio_context, mx.float32,
                                 compiled=True)  # fmt: skip
    stg = s.Perturbations(frozenset({1}), frozenset({1}))
    isolated = s.Perturbations(skip_cross_modal=True)
    for perturbations in (s.NO_PERTURBATION, stg, isolated, s.NO_PERTURBATION):  # the last reuses the first trace
        expected = s.x0_forward(eager, video, audio, 0.9, perturbations=perturbations)
        got = s.x0_forward(traced, video, audio, 0.9, perturbations=perturbations)
        for name, a, b in zip(("video", "audio"), expected, got, strict=True):
            check(f"compiled {name} {perturbations}", b, np.array(a), atol=1e-5)
    assert traced._blocks.traces == 3  # no flags, STG on block 1, no cross-modal attention


@pytest.mark.parametrize("model", ["t20", "t23"])
def test_split_compiled_blocks_compute_the_whole_blocks_bit_for_bit(model: str, monkeypatch) -> None:
    """Blocks compiled as two halves (attentions, feed-forward), each submitted on its own, give the whole-block
    traces' velocities exactly, with every perturbation; each half is traced once per signature."""
    video, audio = initial_states(model, "distilled_s2")
    eager = stage_inputs(model, video, audio)
    stages = {}
    for split in (False, True):
        monkeypatch.setattr(s, "SPLIT_BLOCKS_FROM_TOKENS", 1 if split else None)  # every stage, or none
        stages[split] = s.StageInputs.build(eager.model, video, audio, eager.video_context, eager.audio_context,
                                            mx.float32, compiled=True)  # fmt: skip
    stg = s.Perturbations(frozenset({1}), frozenset({1}))
    for perturbations in (s.NO_PERTURBATION, stg, s.Perturbations(skip_cross_modal=True)):
        whole, halves = (
            s.x0_forward(stages[split], video, audio, 0.9, perturbations=perturbations) for split in (0, 1)
        )
        for a, b in zip(whole, halves, strict=True):
            np.testing.assert_array_equal(np.array(a), np.array(b))
    assert stages[True]._blocks.parts == ("attend", "feed_forward")
    assert stages[True]._blocks.traces == 6  # 3 signatures, 2 halves
    monkeypatch.setattr(s, "SPLIT_BLOCKS_FROM_TOKENS", video.latent.shape[1] + 1)  # a smaller stage keeps whole blocks
    small = s.StageInputs.build(eager.model, video, audio, eager.video_context, eager.audio_context, mx.float32,
                                compiled=True)  # fmt: skip
    mx.eval(s.x0_forward(small, video, audio, 0.9))
    assert small._blocks.parts == (None,)


def test_a_dropped_compiled_stage_needs_no_garbage_collection() -> None:
    video, audio = initial_states("t20", "distilled_s2")
    eager = stage_inputs("t20", video, audio)

    def compiled_pass() -> None:
        stage = s.StageInputs.build(eager.model, video, audio, eager.video_context, eager.audio_context, mx.float32,
                                    compiled=True)  # fmt: skip
        mx.eval(s.x0_forward(stage, video, audio, 0.9))

    assert cyclic_garbage_after(compiled_pass) == []


# ------------------------------------------------------------------------------------------- ltx-core 1.2.0 changes


def _torch_lerp(start: np.ndarray, end: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """torch.lerp's two-sided formula (exact at weight 1)."""
    return np.where(weight < 0.5, start + weight * (end - start), end - (end - start) * (1 - weight))


def test_fractional_strength_stage2_noising_follows_ltx_core_1_2() -> None:
    """ltx-core 1.2.0's ``GaussianNoiser``: lerp(clean, lerp(latent, noise, scale), mask), conditioning only in the
    clean latent. It differs from 1.0.0's ``noise * mask * scale + content * (1 - mask * scale)`` for a fractional
    strength with a noise scale below 1 (a stage-2 partial-strength image), the one case the fixtures above (strength
    0 / 1 in stage 2, scale 1 in stage 1) cannot tell apart."""
    r = refs()
    fps = float(r["inputs.fps"][0])
    start = mx.array(r["inputs.stage2_initial_video_latent"])
    image = mx.array(r["inputs.image_latent"])
    state = s.condition_by_latent_index(s.video_state(start, fps), image, 0.4, 0)
    noise = mx.array(r["t20.distilled_s2.noise.video"])
    scale = float(np.float32(DISTILLED_STAGE_2[0]))
    noised = s.add_noise(state, noise, scale)
    latent, clean, mask = np.array(state.latent), np.array(state.clean), np.array(state.denoise_mask)[..., None]
    expected = _torch_lerp(clean, _torch_lerp(latent, np.array(noise), np.float32(scale)), mask)
    check("1.2.0 noiser", noised.latent, expected, STATE_ATOL)
    image_tokens = np.array(s.video_to_tokens(image))
    ltx_core_1_0 = np.array(noise)[:, :IMAGE_TOKENS] * 0.6 * scale + image_tokens * (1 - 0.6 * scale)
    assert np.abs(np.array(noised.latent)[:, :IMAGE_TOKENS] - ltx_core_1_0).max() > 0.1, "1.0.0's form is not tested"
    np.testing.assert_array_equal(np.array(noised.latent)[:, IMAGE_TOKENS:], expected[:, IMAGE_TOKENS:])


def test_guidance_combines_in_float32() -> None:
    """ltx-core 1.2.0's ``MultiModalGuider.calculate`` upcasts every prediction to float32 and casts the result back:
    bf16 predictions give exactly the float32 combination of their values, rounded once."""
    r = refs()
    params = guidance()[0]
    forwards = [mx.array(r[f"t23.dev_s1.step0.{n}.video"]) for n in ("cond", "uncond", "perturbed", "isolated")]
    bf16 = [f.astype(mx.bfloat16) for f in forwards]
    got = params.combine(*bf16)
    assert got.dtype == mx.bfloat16
    expected = params.combine(*(f.astype(mx.float32) for f in bf16)).astype(mx.bfloat16)
    np.testing.assert_array_equal(np.array(got.astype(mx.float32)), np.array(expected.astype(mx.float32)))
