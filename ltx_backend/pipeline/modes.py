"""The generation modes as conditioning of sampler states and stage layouts (no mode has a loop of its own).

Every mode below is (a) how each stage's video / audio `LatentState` is built (initial latent, denoise mask,
appended keyframe tokens), (b) a sigma schedule and (c) a denoiser (`simple_denoiser` or `guided_denoiser`) fed to
the one `euler_loop` in `pipeline/sampler.py`. What ltx-pipelines 1.0.0 does, per pipeline:

| mode        | ltx-pipelines class            | stage, size | sigmas                 | denoiser   | states         |
|-------------|--------------------------------|-------------|------------------------|------------|----------------|
| one-stage   | TI2VidOneStagePipeline         | 1, full     | ltx2_sigmas(steps)     | guided*    | images (a)     |
| two-stage   | TI2VidTwoStagesPipeline        | 1, half     | ltx2_sigmas(steps)     | guided*    | images (a)     |
|             |                                | 2, full     | STAGE_2 x sigma0       | simple     | (a), (c)       |
| hq          | TI2VidTwoStagesHQPipeline      | 1, half     | ltx2_sigmas(15, tok.)  | guided HQ  | (a); res_2s    |
|             |                                | 2, full     | STAGE_2 x sigma0       | simple     | (a), (c); res_2s |
| interpolate | KeyframeInterpolationPipeline  | 1, half     | ltx2_sigmas(steps)     | guided*    | keyframes (b)  |
|             |                                | 2, full     | STAGE_2 x sigma0       | simple     | (b), (c)       |
| a2v         | A2VidPipelineTwoStage          | 1, half     | ltx2_sigmas(steps)     | guided a2v | (a), (d)       |
|             |                                | 2, full     | STAGE_2 x sigma0       | simple     | (a), (d), (c') |
| retake      | RetakePipeline(distilled=True) | 1, source   | DISTILLED_STAGE_1      | simple     | (e)            |
| retake      | RetakePipeline                 | 1, source   | ltx2_sigmas(40)        | guided     | (e)            |

(a) `image_conditioning` (``combined_image_conditionings``); (b) `keyframe_conditioning`
(``image_conditionings_by_adding_guiding_latent``); (c) the x2-upsampled stage-1 video latent and the stage-1 audio
latent as initial latents, re-noised; (c') video only, the audio stays the frozen encoded soundtrack; (d)
`frozen_audio_state`; (e) `retake_video_state` / `retake_audio_state`. STAGE_2 = ``DISTILLED_STAGE_2``; "x sigma0":
the stage adds noise scaled by its first sigma. res_2s: ``TI2VidTwoStagesHQPipeline`` steps with the second-order
``Res2sDiffusionStep`` / ``res2s_audio_video_denoising_loop``, not Euler: `pipeline/res2s.py` `res2s_loop`
(``Stage.stepper == "res2s"``), fed the same states and denoisers.

guided*: ``multi_modal_guider_factory_denoising_func`` with constant params = `guided_denoiser` with the checkpoint's
defaults (below). guided HQ: ``LTX_2_3_HQ_PARAMS`` (15 steps; video cfg 3, stg 0, rescale 0.45, modality 3; audio
cfg 7, stg 0, rescale 1, modality 3; `HQ_*_GUIDANCE`), the sigma shift from the half-res latent's token count.
guided a2v: the checkpoint's default video params (modality_scale is ``--a2v-guidance-scale``, default 3), audio
`A2V_AUDIO_GUIDANCE` (all neutral, no negative audio context: its unconditional pass uses the positive audio
context). "x sigma0": the stage
adds noise scaled by its first sigma. Two-stage pipelines' stage 2 runs the distilled LoRA; one seeded generator
serves both stages.

Guidance defaults (ltx-pipelines ``constants``): LTX-2.0 video cfg 3, stg 1 (block 29), rescale 0.7, modality 3;
audio cfg 7, stg 1, rescale 0.7, modality 3; 40 steps. LTX-2.3: the same with STG block 28 and 30 steps.
The stage-1 noise generator is reused by stage 2 (one seeded generator per job).

**a2v** (A2VidPipelineTwoStage): the soundtrack is read from ``start`` for ``num_frames / fps`` seconds (the CLI's
default max duration), encoded by the audio VAE encoder, cut to ``audio_latent_frames(num_frames, fps)`` latent
frames and held fixed in both stages: the audio state's latent and clean latent are the encoded audio and its denoise
mask is 0 everywhere (ltx-pipelines ``denoise_video_only``: the noiser runs with scale 0, i.e. it draws noise that is
multiplied by 0, then the mask is zeroed), so the audio tokens enter every forward at timestep 0 and never move.
Only the video latent is decoded. **The output MP4 carries the original waveform** as decoded from the file
(normalised to [-1, 1], at the file's own sample rate), not a VAE re-decode ("to preserve fidelity"); the
reference writes it as is, so the clip's sound is bit-identical to the input up to the AAC encode.

**retake** (RetakePipeline): the source clip (all its frames; 8k+1 frames and 32-multiple sizes are required by the
reference CLI) is encoded by the video VAE encoder and its soundtrack by the audio VAE encoder (trimmed, or padded
with zero latents, to the video's audio frame count). Each is the initial AND clean latent of its state; the denoise
mask is 1 for the tokens whose time span overlaps ``[start, end)`` (``t_end > start and t_start < end``, spans from
the token positions: causal-fixed pixel frames / fps for video, seconds for audio) and 0 elsewhere, so tokens outside
the window keep their encoded value exactly. ``regenerate_video=False`` (or audio) gives an all-zero mask: that
stream is kept whole. A source without sound generates its audio from scratch (mask 1, zero latent). Both streams
are decoded; the output's audio is the VAE re-decode (kept parts included).

**extend** (no reference pipeline in 1.0.0; our design from the retake machinery): to continue a clip of ``F``
frames (8k+1; `source.encode_source` keeps the longest 8k+1 prefix) by ``N`` seconds, the output is one clip of
``F' = F + 8 * ceil(N * fps / 8)`` frames (`extended_frames`). The source is encoded whole; its video latent frames
fill the first latent frames of the longer state and its audio latent the first audio frames, with denoise mask 0;
the rest start empty with mask 1 (`extend_states`). It is a retake whose window is ``[F / fps, inf)`` on a canvas
longer than the source, with retake's stage layout (one stage at the source's size, distilled or dev): the
transformer sees the kept part as clean context at its true positions (temporal attention carries the motion on,
audio / video cross-attention keeps sync) and generates the new part; the joined latent is decoded once and muxed
with the decoded soundtrack fit to ``F' / fps`` (`joined_duration`). The seam: latent frame ``f`` of the canvas
starts exactly at ``F / fps`` (causal spans), so no source video latent is regenerated; audio latents whose span
ends after the seam (the 40 ms spans straddle it) or that lie past the encoded soundtrack are generated. The kept
latents leave the sampler bit for bit (tested); the kept frames go through encode -> decode, so the output matches
the source within codec tolerance, not bit for bit (the decoder is not causal: the last kept frames also see the
first new latent).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import mlx.core as mx
import numpy as np

from ltx_backend.errors import ErrorCode, LtxError
from ltx_backend.pipeline.audio_encode import fit_latent_frames
from ltx_backend.pipeline.sampler import (
    AUDIO_GUIDANCE,
    VIDEO_GUIDANCE,
    GuidanceParams,
    LatentState,
    audio_latent_frames,
    audio_state,
    condition_by_keyframe,
    condition_by_latent_index,
    video_state,
)
from ltx_backend.pipeline.schedules import DISTILLED_STAGE_1, DISTILLED_STAGE_2, ltx2_sigmas

VIDEO_TIME_SCALE = 8  # pixel frames per latent frame (after the first)
AUDIO_CHANNELS, AUDIO_MEL_BINS = 8, 16  # the audio latent of every LTX-2 / 2.3 checkpoint

# ltx-pipelines constants: non-distilled defaults per model family, and the HQ pipeline's.
LTX2_STEPS, LTX23_STEPS, HQ_STEPS, RETAKE_STEPS = 40, 30, 15, 40
HQ_VIDEO_GUIDANCE = GuidanceParams(cfg_scale=3.0, stg_scale=0.0, rescale_scale=0.45, modality_scale=3.0)
HQ_AUDIO_GUIDANCE = GuidanceParams(cfg_scale=7.0, stg_scale=0.0, rescale_scale=1.0, modality_scale=3.0)
A2V_AUDIO_GUIDANCE = GuidanceParams()  # MultiModalGuiderParams(): the frozen audio needs no guidance


def default_guidance(stg_block: int) -> tuple[GuidanceParams, GuidanceParams]:
    """ltx-pipelines ``LTX_2_PARAMS`` / ``LTX_2_3_PARAMS`` guidance with the model's STG block (29 / 28)."""
    return replace(VIDEO_GUIDANCE, stg_blocks=(stg_block,)), replace(AUDIO_GUIDANCE, stg_blocks=(stg_block,))


# ------------------------------------------------------------------------------------------------- validation


def check_retake_window(start: float, end: float, duration: float) -> None:
    """A retake window must be non-empty and overlap the source clip (validate before compute)."""
    if not (0 <= start < end) or start >= duration:
        raise LtxError(
            ErrorCode.INVALID_PARAMS,
            f"--retake {start:g}:{end:g} is not a window inside the {duration:.3f} s source clip",
            f"Give START:END seconds with 0 <= START < END and START < {duration:.3f}.",
            field="retake_window",
        )


def check_extend_seconds(seconds: float, fps: float) -> None:
    """An extension adds at least one latent frame (8 video frames)."""
    if not seconds > 0:
        raise LtxError(
            ErrorCode.INVALID_PARAMS,
            f"--extend {seconds:g}: the extension must be longer than 0 s",
            f"Give the seconds to add (at {fps:g} fps, every 8 frames = {8 / fps:.3f} s make one latent frame).",
            field="extend_seconds",
        )


# ----------------------------------------------------------------------------------------------- conditioning


def frozen(state: LatentState) -> LatentState:
    """Keep every token of `state` as it is (denoise mask 0): its latent is the clean latent, timestep 0."""
    return replace(state, clean=state.latent, denoise_mask=mx.zeros(state.denoise_mask.shape), unconditioned=False)


def frozen_audio_state(latent: mx.array, dtype: mx.Dtype = mx.float32) -> LatentState:
    """a2v: the encoded soundtrack (1, C, T, M) as a state the sampler never changes (``denoise_video_only``)."""
    return frozen(audio_state(latent, dtype))


def time_window_mask(state: LatentState, start: float, end: float) -> LatentState:
    """ltx-pipelines ``TemporalRegionMask``: denoise mask 1 where a token's time span overlaps [start, end), else 0.

    The spans are the state's own positions (seconds): video positions are causal-fixed pixel frame bounds / fps,
    audio positions mel-frame bounds in seconds, exactly the reference's coordinates. Appended keyframe tokens are
    not covered (a retake state has none)."""
    bounds = state.positions[0, 0, : state.generated_tokens]  # (T, 2) seconds
    inside = (bounds[:, 1] > start) & (bounds[:, 0] < end)
    mask = mx.array(inside.astype(np.float32))[None]
    if state.generated_tokens != state.latent.shape[1]:
        mask = mx.concatenate([mask, state.denoise_mask[:, state.generated_tokens :]], axis=1)
    return replace(state, clean=state.latent, denoise_mask=mask, unconditioned=bool(inside.all()))


def retake_video_state(
    source_latent: mx.array, fps: float, start: float, end: float, regenerate: bool = True, dtype: mx.Dtype = mx.float32
) -> LatentState:
    """The encoded source video (1, C, F, H, W): regenerated in [start, end), kept elsewhere (all kept if not
    `regenerate`)."""
    state = video_state(source_latent, fps, dtype)
    return time_window_mask(state, start, end) if regenerate else frozen(state)


def retake_audio_state(
    source_latent: mx.array | None,
    frames: int,
    start: float,
    end: float,
    regenerate: bool = True,
    dtype: mx.Dtype = mx.float32,
    channels: int = AUDIO_CHANNELS,
    mel_bins: int = AUDIO_MEL_BINS,
) -> LatentState:
    """The encoded source soundtrack cut / zero-padded to `frames` latent frames, masked like the video. A source
    without sound (None) gets a fresh audio state, generated whole whatever the window (as the reference does)."""
    if source_latent is None:
        return audio_state(mx.zeros((1, channels, frames, mel_bins)), dtype)
    state = audio_state(fit_latent_frames(source_latent, frames), dtype)
    return time_window_mask(state, start, end) if regenerate else frozen(state)


def extended_frames(source_frames: int, seconds: float, fps: float) -> int:
    """Frames of the joined clip: the source plus at least `seconds`, rounded up to whole latent frames (8k+1)."""
    if (source_frames - 1) % VIDEO_TIME_SCALE:
        raise ValueError(f"the source must have 8k+1 frames, got {source_frames}")
    if seconds <= 0:
        raise ValueError(f"an extension must be longer than 0 s, got {seconds}")
    return source_frames + VIDEO_TIME_SCALE * math.ceil(round(seconds * fps, 6) / VIDEO_TIME_SCALE)


def extend_states(
    source_video: mx.array,
    source_audio: mx.array | None,
    total_frames: int,
    fps: float,
    dtype: mx.Dtype = mx.float32,
    channels: int = AUDIO_CHANNELS,
    mel_bins: int = AUDIO_MEL_BINS,
) -> tuple[LatentState, LatentState]:
    """extend: the source's latents (video (1, C, f, H, W); audio (1, C, T, M) or None) at the start of a clip of
    `total_frames` pixel frames, kept (mask 0); the continuation is generated (mask 1). (video, audio) states.

    The seam is the source's duration ``(8 (f - 1) + 1) / fps``: latent frame f starts exactly there (causal
    spans), so the video window ``[seam, inf)`` regenerates no source frame. Audio latents whose span ends after the
    seam, or that lie past the encoded soundtrack, are generated; the others are kept."""
    b, c, f, h, w = source_video.shape
    latent_frames = (total_frames - 1) // VIDEO_TIME_SCALE + 1
    if latent_frames <= f:
        raise ValueError(f"an extension to {total_frames} frames adds no latent frame to {f}")
    canvas = mx.concatenate([source_video, mx.zeros((b, c, latent_frames - f, h, w), source_video.dtype)], axis=2)
    seam = ((f - 1) * VIDEO_TIME_SCALE + 1) / fps
    video = time_window_mask(video_state(canvas, fps, dtype), seam, math.inf)
    audio_frames = audio_latent_frames(total_frames, fps)
    if source_audio is None:
        return video, audio_state(mx.zeros((1, channels, audio_frames, mel_bins)), dtype)
    kept = min(source_audio.shape[2], audio_frames)
    audio = time_window_mask(
        audio_state(fit_latent_frames(source_audio[:, :, :kept], audio_frames), dtype), seam, math.inf
    )
    past_source = mx.array(np.arange(audio_frames) >= kept)[None]
    mask = mx.where(past_source, mx.ones_like(audio.denoise_mask), audio.denoise_mask)
    return video, replace(audio, denoise_mask=mask, unconditioned=False)


def joined_duration(total_frames: int, fps: float) -> float:
    """Seconds of the joined extend clip (the muxed soundtrack is fit to it)."""
    return total_frames / fps


@dataclass(frozen=True)
class Image:
    """An encoded conditioning image (1, C, 1, h, w) at pixel frame `frame_index` with `strength`."""

    latent: mx.array
    frame_index: int
    strength: float = 1.0


def image_conditioning(state: LatentState, images: list[Image], fps: float) -> LatentState:
    """ltx-pipelines ``combined_image_conditionings``: frame 0 replaces latent frame 0, later ones are appended."""
    for image in images:
        if image.frame_index == 0:
            state = condition_by_latent_index(state, image.latent, image.strength, 0)
        else:
            state = condition_by_keyframe(state, image.latent, image.frame_index, image.strength, fps)
    return state


def keyframe_conditioning(state: LatentState, images: list[Image], fps: float) -> LatentState:
    """ltx-pipelines ``image_conditionings_by_adding_guiding_latent`` (keyframe interpolation): every image is
    appended as keyframe tokens, the first frame's too (with the causal time fix of frame 0)."""
    for image in images:
        state = condition_by_keyframe(state, image.latent, image.frame_index, image.strength, fps)
    return state


# ------------------------------------------------------------------------------------------------ stage layouts


@dataclass(frozen=True)
class Stage:
    """One denoising stage: the resolution factor of the output size, its sigmas, and whether it is guided."""

    scale: float  # 0.5: half the output width / height; 1.0: full
    sigmas: tuple[float, ...] | np.ndarray
    guided: bool
    noise_scale: float = 1.0  # the first sigma where the stage refines an upsampled latent
    upsample_before: bool = False
    stepper: str = "euler"  # "euler": sampler.euler_loop; "res2s": res2s.res2s_loop (hq)


def stages(pipeline: str, steps: int, distilled: bool = False, stage1_tokens: int | None = None) -> tuple[Stage, ...]:
    """Stage layout of a pipeline (``one-stage``, ``two-stage``, ``hq``, ``interpolate``, ``a2v``, ``retake``,
    ``extend``). ``hq`` shifts its stage-1 sigmas by `stage1_tokens` (the half-size latent's f * h * w) and guides
    with `HQ_VIDEO_GUIDANCE` / `HQ_AUDIO_GUIDANCE` (default `HQ_STEPS`)."""
    refine = Stage(1.0, DISTILLED_STAGE_2, guided=False, noise_scale=DISTILLED_STAGE_2[0], upsample_before=True)
    if pipeline == "hq":
        if stage1_tokens is None:
            raise ValueError("hq needs the stage-1 latent's token count")
        first = Stage(0.5, ltx2_sigmas(steps, stage1_tokens), guided=True, stepper="res2s")
        return (first, replace(refine, stepper="res2s"))
    if pipeline == "one-stage":
        return (Stage(1.0, ltx2_sigmas(steps), guided=True),)
    if pipeline in ("two-stage", "interpolate", "a2v"):
        return (Stage(0.5, ltx2_sigmas(steps), guided=True), refine)
    if pipeline in ("retake", "extend"):
        return (Stage(1.0, DISTILLED_STAGE_1, guided=False) if distilled else Stage(1.0, ltx2_sigmas(steps), True),)
    raise ValueError(f"no stage layout for pipeline {pipeline!r}")
