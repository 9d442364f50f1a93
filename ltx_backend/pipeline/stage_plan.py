"""A job's denoising as data: the stages `modes.stages` lays out for its mode and pipeline, each with how its video
and audio states are built, the conditioning steps applied to the video state, the loop that steps it and the
guidance of its denoiser. `Engine._denoise` runs every plan through the same code; no mode has a loop of its own.

Per stage the engine: builds the video state (`StagePlan.video_state`, from the previous stage's upsampled latent
where the stage refines one), applies `video_conditioning` in order (images / keyframes; more steps slot in here,
e.g. an IC-LoRA reference video), noises it to the stage's first sigma, builds and noises the audio state, then
runs `LOOPS[stage.stepper]` with a simple or a guided denoiser. What each mode builds is in pipeline/modes.py.

Extension points: another conditioning item for some stages (e.g. IC-LoRA's reference video in stage 1) is one more
function in that stage's `video_conditioning`, added in `plan_stages` from what `Encoded` carries; another stage
loop (e.g. an ancestral stage 1) is a `LOOPS` entry named by `Stage.stepper`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import mlx.core as mx

from ltx_backend.pipeline import modes
from ltx_backend.pipeline import sampler as s
from ltx_backend.pipeline.request import SOURCE_MODES, GenerationRequest
from ltx_backend.pipeline.res2s import Res2sNoise, res2s_loop
from ltx_backend.pipeline.schedules import DISTILLED_STAGE_1
from ltx_backend.pipeline.source import SourceClip

# ltx-pipelines' defaults per model family (2.5 takes LTX_2_3_PARAMS: ltx25-facts §4.2)
DEV_STEPS = {"2.0": modes.LTX2_STEPS, "2.3": modes.LTX23_STEPS, "2.5": modes.LTX23_STEPS}
MEL_BINS = modes.AUDIO_MEL_BINS

# One conditioning step on a stage's video state (images, keyframes, an IC-LoRA reference video, ...).
Conditioning = Callable[[s.LatentState], s.LatentState]
# (previous stage's output latent, or None in the first stage) -> the stage's state before noising
StateBuilder = Callable[[mx.array | None], s.LatentState | None]


# A stage's denoising loop: (sigmas, video, audio, denoise, on_step, seed) -> (video, audio). `Stage.stepper` picks
# one; every loop takes the same states and denoisers (another, e.g. an ancestral stage 1, is one more entry).
Loop = Callable[..., tuple[s.LatentState, s.LatentState | None]]
LOOPS: dict[str, Loop] = {
    "euler": lambda sigmas, video, audio, denoise, on_step, seed: s.euler_loop(sigmas, video, audio, denoise, on_step),
    "res2s": lambda sigmas, video, audio, denoise, on_step, seed: res2s_loop(
        sigmas, video, audio, denoise, Res2sNoise(seed), on_step
    ),
}


@dataclass(frozen=True)
class Encoded:
    """What the job encoded before denoising."""

    images: dict[tuple[int, int], list[mx.array]] = field(default_factory=dict)  # keyframe latents per stage size
    source: SourceClip | None = None  # retake / extend
    soundtrack: mx.array | None = None  # a2v: the encoded soundtrack (1, C, T, 16), fit to the clip


@dataclass(frozen=True)
class StagePlan:
    number: int  # 1-based: the stage's progress events and phase
    stage: modes.Stage
    latent_size: tuple[int, int, int]  # (frames, height, width) of the video latent
    video_state: StateBuilder
    audio_state: StateBuilder
    video_conditioning: tuple[Conditioning, ...] = ()
    guidance: tuple[s.GuidanceParams, s.GuidanceParams] | None = None  # None: the simple (unguided) denoiser
    negative_audio: bool = True  # False (a2v): the unconditional pass keeps the positive audio context

    @property
    def steps(self) -> int:
        return len(self.stage.sigmas) - 1


def stage_layout(request: GenerationRequest, variant: str, version: str) -> tuple[modes.Stage, ...]:
    """`modes.stages` for the request on this checkpoint. A distilled checkpoint runs its fixed sigmas unguided
    where a dev checkpoint is guided (the layout, upsampling and stepper stay the pipeline's)."""
    distilled = variant == "distilled"
    layout = request.layout
    if layout == "hq":
        steps = request.steps or modes.HQ_STEPS
    elif layout in SOURCE_MODES:
        steps = request.steps or modes.RETAKE_STEPS
    else:
        steps = request.steps or DEV_STEPS[version]
    tokens = request.latent_frames * (request.height // 64) * (request.width // 64)  # the half-size stage 1
    stages = modes.stages(layout, steps, distilled, tokens if layout == "hq" else None)
    if distilled:
        stages = tuple(replace(st, sigmas=DISTILLED_STAGE_1, guided=False) if st.guided else st for st in stages)
    return stages


def plan_stages(
    request: GenerationRequest,
    variant: str,
    version: str,
    stg_block: int,
    encoded: Encoded,
    channels: int,
    audio_channels: int,
    dtype: mx.Dtype,
) -> list[StagePlan]:
    """Every stage of the job, in order. `channels` / `audio_channels`: the transformer's latent input widths."""
    fps, mode = request.fps, request.mode
    audio_latent_channels = audio_channels // MEL_BINS
    full_h, full_w = request.height // 32, request.width // 32
    frames = request.latent_frames

    video_builder, audio_builder = _state_builders(request, encoded, channels, audio_latent_channels, dtype)
    plans = []
    for number, stage in enumerate(stage_layout(request, variant, version), start=1):
        size = (frames, int(full_h * stage.scale), int(full_w * stage.scale))
        plans.append(
            StagePlan(
                number,
                stage,
                size,
                video_state=video_builder(size),
                audio_state=audio_builder if request.audio else (lambda previous: None),
                video_conditioning=_image_steps(request, encoded, size, fps),
                guidance=_guidance(request, stg_block) if stage.guided else None,
                negative_audio=mode != "a2v",
            )
        )
    return plans


def _state_builders(request: GenerationRequest, encoded: Encoded, channels: int, audio_channels: int, dtype):
    """(size -> video StateBuilder, audio StateBuilder) for the request's mode."""
    fps, mode = request.fps, request.mode
    audio_frames = s.audio_latent_frames(request.num_frames, fps)
    source = encoded.source

    if mode == "retake":
        start, end = request.retake_window
        video = modes.retake_video_state(source.video_latent, fps, start, end, request.retake_video, dtype)
        audio = modes.retake_audio_state(source.audio_latent, audio_frames, start, end, request.retake_audio, dtype,
                                         channels=audio_channels, mel_bins=MEL_BINS)  # fmt: skip
        return (lambda size: lambda previous: video), (lambda previous: audio)
    if mode == "extend":
        video, audio = modes.extend_states(source.video_latent, source.audio_latent, request.num_frames, fps, dtype,
                                           channels=audio_channels, mel_bins=MEL_BINS)  # fmt: skip
        return (lambda size: lambda previous: video), (lambda previous: audio)

    def fresh_video(size: tuple[int, int, int]) -> StateBuilder:
        def build(previous: mx.array | None) -> s.LatentState:
            latent = mx.zeros((1, channels, *size)) if previous is None else previous  # stage 2: the upsampled one
            return s.video_state(latent, fps, dtype)

        return build

    if mode == "a2v":
        frozen = modes.frozen_audio_state(encoded.soundtrack, dtype)
        return fresh_video, (lambda previous: frozen)

    def fresh_audio(previous: mx.array | None) -> s.LatentState:
        latent = mx.zeros((1, audio_channels, audio_frames, MEL_BINS)) if previous is None else previous
        return s.audio_state(latent, dtype)

    return fresh_video, fresh_audio


def _image_steps(
    request: GenerationRequest, encoded: Encoded, size: tuple[int, int, int], fps: float
) -> tuple[Conditioning, ...]:
    """The keyframes at this stage's size: ``image_conditioning`` (frame 0 replaces the first latent frame, later
    ones are appended), or, for keyframe interpolation, ``keyframe_conditioning`` (all appended)."""
    if not request.keyframes:
        return ()
    latents = encoded.images[(size[1] * 32, size[2] * 32)]
    images = [modes.Image(latent, k.frame_index, k.strength) for k, latent in zip(request.keyframes, latents,
                                                                                   strict=True)]  # fmt: skip
    condition = modes.keyframe_conditioning if request.mode == "interpolate" else modes.image_conditioning
    return (lambda state: condition(state, images, fps),)


def _guidance(request: GenerationRequest, stg_block: int) -> tuple[s.GuidanceParams, s.GuidanceParams]:
    """ltx-pipelines' guider params: the checkpoint's defaults (HQ's for hq; a neutral audio guider for a2v), the
    request's cfg_scale on the video."""
    video, audio = modes.default_guidance(stg_block)
    if request.layout == "hq":
        video, audio = modes.HQ_VIDEO_GUIDANCE, modes.HQ_AUDIO_GUIDANCE
    if request.mode == "a2v":
        audio = modes.A2V_AUDIO_GUIDANCE
    if request.cfg_scale is not None:
        video = replace(video, cfg_scale=request.cfg_scale)
    return video, audio
