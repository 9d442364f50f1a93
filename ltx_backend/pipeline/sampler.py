"""Latent states, conditioning, noising and the Euler denoising loop, as ltx-pipelines runs them.

Video tokens are the latent cells in (frame, row, column) order with the channels as features; audio tokens are
the latent frames with ``(channel, mel bin)`` features. A state carries the tokens, the per-token denoise mask
(1 = generate, 0 = keep), the clean latent conditioning tokens are pulled back to, and the token positions.
Keyframe conditioning appends tokens; they are dropped again when the stage ends. A video state also carries the
keyframe marker mask (ltx-core 1.2.0 ``keyframes_mask``): 1 on every token of the first latent frame, 0 on appended
conditioning tokens; models with ``keyframes_abs_pos_embedding`` (LTX-2.5) add their marker there, others ignore it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import mlx.core as mx
import numpy as np

from ltx_backend.models.rope import VIDEO_SCALE, audio_positions, video_positions
from ltx_backend.models.transformer import (
    NO_PERTURBATION,
    CompiledBlocks,
    ForwardPass,
    LTXModel,
    Perturbations,
    StreamInput,
)

LATENTS_PER_SECOND = 25.0  # audio: 16 kHz / hop 160 / 4 mel frames per latent
# The forward is submitted to the device block by block (mx.async_eval), so the GPU runs block k while Python
# builds block k + 1, and one submission at most is left unfinished, which bounds the temporaries the device
# holds until a submission completes (LTXModel.__call__). H100, compiled blocks, 6144 | 1536 video tokens
# (benchmarks/transformer_forward.py --compile --submit EVERY:IN_FLIGHT):
#   every 4 blocks, unbounded   0.370 s, 10.6 GB above the weights | 0.114 s, 1.9 GB
#   every 4 blocks, 1 in flight 0.373 s,  9.6 GB                    | 0.098 s, 2.6 GB
#   every block, 1 in flight    0.383 s,  3.3 GB                    | 0.097 s, 1.1 GB   <- chosen
SUBMIT_EVERY_BLOCKS = 1
IN_FLIGHT = 1
# Stages with at least this many video tokens submit half a block at a time (its attentions, then its feed-forward:
# CompiledBlocks(split=True)): the device then holds one block's temporaries at the peak instead of two. None: never.
# (`transformer_forward.py --compile --split-blocks`, `generate.py --split-from-tokens N`)
SPLIT_BLOCKS_FROM_TOKENS: int | None = None


@dataclass(frozen=True)
class LatentState:
    latent: mx.array  # (1, T, C) tokens
    denoise_mask: mx.array  # (1, T) float32
    clean: mx.array  # (1, T, C)
    positions: np.ndarray  # (1, axes, T, 2)
    generated_tokens: int  # tokens that belong to the output (appended conditioning tokens follow them)
    unconditioned: bool = True  # the denoise mask is all ones (no token is conditioned)
    keyframes_mask: mx.array | None = None  # (1, T) video only: 1 = marked (first latent frame), 0 = not
    attention_mask: mx.array | None = None  # (1, T, T) in [0, 1]: IC-LoRA reference attention (None: all attend)

    @property
    def output_latent(self) -> mx.array:
        return self.latent[:, : self.generated_tokens]


def audio_latent_frames(num_frames: int, fps: float) -> int:
    """ltx-core ``AudioLatentShape.from_video_pixel_shape``: 25 audio latents per second of video."""
    return round(num_frames / fps * LATENTS_PER_SECOND)


def video_to_tokens(latent: mx.array) -> mx.array:
    """(B, C, F, H, W) -> (B, F*H*W, C)."""
    b, c = latent.shape[:2]
    return latent.reshape(b, c, -1).transpose(0, 2, 1)


def tokens_to_video(tokens: mx.array, frames: int, height: int, width: int) -> mx.array:
    b, _, c = tokens.shape
    return tokens.transpose(0, 2, 1).reshape(b, c, frames, height, width)


def audio_to_tokens(latent: mx.array) -> mx.array:
    """(B, C, T, M) -> (B, T, C*M), channel-major features."""
    b, c, t, m = latent.shape
    return latent.transpose(0, 2, 1, 3).reshape(b, t, c * m)


def tokens_to_audio(tokens: mx.array, channels: int) -> mx.array:
    b, t, features = tokens.shape
    return tokens.reshape(b, t, channels, features // channels).transpose(0, 2, 1, 3)


def initial_state(tokens: mx.array, positions: np.ndarray, dtype: mx.Dtype) -> LatentState:
    """Latents are kept in the compute dtype between steps, as ltx-pipelines keeps them (bf16 in production)."""
    tokens = tokens.astype(dtype)
    return LatentState(tokens, mx.ones(tokens.shape[:2]), tokens, positions, tokens.shape[1])


def video_state(latent: mx.array, fps: float, dtype: mx.Dtype = mx.float32) -> LatentState:
    """A state for a (1, C, F, H, W) latent (zeros for a fresh generation, the upsampled latent in stage 2)."""
    _, _, f, h, w = latent.shape
    state = initial_state(video_to_tokens(latent), video_positions(f, h, w, fps), dtype)
    return replace(state, keyframes_mask=first_frame_keyframes_mask(f, h, w))


def first_frame_keyframes_mask(frames: int, height: int, width: int) -> mx.array:
    """ltx-core ``_first_frame_keyframes_mask``: every token of the first latent frame is marked, in every stage and
    mode, whether or not the frame is conditioned."""
    per_frame = height * width
    return mx.array(np.arange(frames * per_frame) < per_frame, dtype=mx.float32)[None]


def extend_keyframes_mask(state: LatentState, appended: int, marked: bool = False) -> mx.array | None:
    """ltx-core ``extend_keyframes_mask``: the mask for `appended` more tokens (keyframe images and reference videos
    unmarked; generated keyframe slots marked)."""
    if state.keyframes_mask is None:
        return None
    extra = mx.full((1, appended), 1.0 if marked else 0.0)
    return mx.concatenate([state.keyframes_mask, extra], axis=1)


def audio_state(latent: mx.array, dtype: mx.Dtype = mx.float32) -> LatentState:
    return initial_state(audio_to_tokens(latent), audio_positions(latent.shape[2]), dtype)


def condition_by_latent_index(state: LatentState, latent: mx.array, strength: float, latent_index: int) -> LatentState:
    """Condition latent frame `latent_index` on an encoded image (ltx-core ``VideoConditionByLatentIndex``).

    As in ltx-core 1.2.0 only the clean latent and the mask change: `add_noise` blends the image in from there."""
    tokens = video_to_tokens(latent.astype(state.latent.dtype))
    per_frame = tokens.shape[1]
    start, stop = latent_index * per_frame, latent_index * per_frame + per_frame
    if stop > state.generated_tokens:
        raise ValueError(f"latent frame {latent_index} is outside the video")
    mask = mx.full((1, per_frame), 1.0 - strength)
    return replace(
        state,
        clean=_splice(state.clean, tokens, start),
        denoise_mask=_splice(state.denoise_mask, mask, start),
        unconditioned=False,
    )


def _splice(array: mx.array, part: mx.array, start: int) -> mx.array:
    return mx.concatenate([array[:, :start], part, array[:, start + part.shape[1] :]], axis=1)


def condition_by_keyframe(
    state: LatentState, latent: mx.array, frame_index: int, strength: float, fps: float
) -> LatentState:
    """Append an encoded image as tokens at pixel frame `frame_index` (ltx-core ``VideoConditionByKeyframeIndex``).

    The appended noisy tokens are zeros and the image is their clean latent, as in ltx-core 1.2.0."""
    tokens = video_to_tokens(latent.astype(state.latent.dtype))
    _, _, f, h, w = latent.shape
    fine = np.meshgrid(np.arange(f), np.arange(h), np.arange(w), indexing="ij")
    starts = np.stack(fine).reshape(3, -1)
    bounds = (np.stack([starts, starts + 1], axis=-1) * np.array(VIDEO_SCALE).reshape(3, 1, 1)).astype(np.float64)
    if frame_index == 0:  # the causal fix applies to a keyframe at the very first frame only
        bounds[0] = np.clip(bounds[0] + 1 - VIDEO_SCALE[0], 0, None)
    if f == 1:  # ltx-core 1.2.0: an (unmarked) single-pixel-frame keyframe spans RoPE time [idx, idx + 1) / fps
        bounds[0, :, 1] = bounds[0, :, 0] + 1
    bounds[0] += frame_index
    positions = bounds.astype(np.float32)
    positions[0] = positions[0] / np.float32(fps)
    mask = mx.full((1, tokens.shape[1]), 1.0 - strength)
    return replace(
        state,
        latent=mx.concatenate([state.latent, mx.zeros_like(tokens)], axis=1),
        clean=mx.concatenate([state.clean, tokens], axis=1),
        denoise_mask=mx.concatenate([state.denoise_mask, mask], axis=1),
        positions=np.concatenate([state.positions, positions[None]], axis=2),
        unconditioned=False,
        keyframes_mask=extend_keyframes_mask(state, tokens.shape[1]),
    )


def add_noise(state: LatentState, noise: mx.array, scale: float = 1.0) -> LatentState:
    """ltx-core 1.2.0 ``GaussianNoiser``: ``lerp(clean, lerp(latent, noise, scale), mask)`` per token.

    `scale` < 1 is stage 2's start at its first sigma. ltx-core 1.0.0's ``noise * mask * scale + latent * (1 -
    mask * scale)`` (conditioning written into the latent) agrees for masks of 0 or 1 or a scale of 1 only: they
    differ for a fractional-strength image in stage 2."""
    dtype = state.latent.dtype
    mask = state.denoise_mask[..., None].astype(dtype)
    noised = _lerp(state.latent, noise.astype(dtype), mx.array(scale, dtype=dtype))
    return replace(state, latent=_lerp(state.clean.astype(dtype), noised, mask).astype(dtype))


def _lerp(start: mx.array, end: mx.array, weight: mx.array) -> mx.array:
    """torch.lerp: ``start + w (end - start)``, and ``end - (1 - w)(end - start)`` for w >= 0.5 (exact at w = 1)."""
    delta = end - start
    return mx.where(weight < 0.5, start + weight * delta, end - (1 - weight) * delta)


# (video state, audio state, sigma) -> denoised (video tokens, audio tokens)
DenoiseFn = Callable[[LatentState, LatentState | None, float], tuple[mx.array, mx.array | None]]


def euler_loop(
    sigmas: tuple[float, ...] | np.ndarray,
    video: LatentState,
    audio: LatentState | None,
    denoise: DenoiseFn,
    on_step: Callable[[int, int], None] = lambda step, total: None,
) -> tuple[LatentState, LatentState | None]:
    """ltx-pipelines ``euler_denoising_loop``: denoise, pull conditioned tokens back to clean, Euler step.

    The sigmas are float32 values as in ltx-pipelines (a tuple of Python floats such as ``DISTILLED_STAGE_1`` is
    rounded first, so that ``next_sigma - sigma`` is the float32 difference ltx-core steps by)."""
    sigmas = [float(s) for s in np.asarray(sigmas, dtype=np.float32)]
    total = len(sigmas) - 1
    for step in range(total):
        sigma, next_sigma = sigmas[step], sigmas[step + 1]
        denoised_video, denoised_audio = denoise(video, audio, sigma)
        video = _euler(video, denoised_video, sigma, next_sigma)
        if audio is not None:
            audio = _euler(audio, denoised_audio, sigma, next_sigma)
        mx.eval(video.latent, *([audio.latent] if audio is not None else []))
        on_step(step + 1, total)
    return video, audio


def _euler(state: LatentState, denoised: mx.array, sigma: float, next_sigma: float) -> LatentState:
    # post_process_latent, then to_velocity and the update in float32, each result in the latent's dtype.
    mask = state.denoise_mask[..., None]
    dtype = state.latent.dtype
    denoised = (denoised.astype(mx.float32) * mask + state.clean.astype(mx.float32) * (1 - mask)).astype(dtype)
    velocity = ((state.latent.astype(mx.float32) - denoised.astype(mx.float32)) / sigma).astype(dtype)
    latent = state.latent.astype(mx.float32) + velocity.astype(mx.float32) * (next_sigma - sigma)
    return replace(state, latent=latent.astype(dtype))


@dataclass
class StageInputs:
    """What stays fixed during one stage: the model, the contexts and the RoPE tables of the token positions."""

    model: LTXModel
    video_context: mx.array
    audio_context: mx.array | None
    video_rope: object
    audio_rope: object | None
    dtype: mx.Dtype
    # With `compiled`, the blocks run through one mx.compile trace shared by all 48 of them (weights as inputs),
    # which fuses the norms, modulations and activations between the matmuls for the Python cost of tracing one
    # block per stage (tracing the whole 48-block forward cost ~0.6 s per stage on an H100).
    compiled: bool = False
    _blocks: CompiledBlocks | None = field(default=None, repr=False)

    def velocities(self, passes: list[ForwardPass]) -> list[tuple[mx.array, mx.array | None]]:
        """The passes of one step run block by block (streamed weights are read once for all of them)."""
        if self.compiled and self._blocks is None:
            tokens = max((run.video.latent.shape[1] for run in passes if run.video is not None), default=0)
            split = SPLIT_BLOCKS_FROM_TOKENS is not None and tokens >= SPLIT_BLOCKS_FROM_TOKENS
            self._blocks = self.model.compiled_blocks(split=split)
        return self.model.forward_passes(
            passes, compiled=self._blocks, eval_every=SUBMIT_EVERY_BLOCKS, in_flight=IN_FLIGHT
        )

    @classmethod
    def build(
        cls,
        model: LTXModel,
        video: LatentState,
        audio: LatentState | None,
        video_context: mx.array,
        audio_context: mx.array | None,
        dtype: mx.Dtype,
        compiled: bool = False,
    ) -> StageInputs:
        return cls(
            model,
            video_context.astype(dtype),
            None if audio_context is None else audio_context.astype(dtype),
            model.rope(video.positions, "video", dtype),
            None if audio is None else model.rope(audio.positions, "audio", dtype),
            dtype,
            compiled=compiled,
        )


def _stream(state: LatentState, context: mx.array, rope, sigma: float, dtype: mx.Dtype) -> StreamInput:
    # Unconditioned, every token has the same timestep: one AdaLN row broadcast over the tokens gives the same
    # values as ltx-core's row per token for 1/T of the work and memory (6144 x 24576 values per block input).
    # The row feeds the A<->V scale/shift too (each stream's own timesteps); the A<->V gates take `sigma`, the
    # other stream's, per sample either way.
    timesteps = mx.full((1, 1), sigma) if state.unconditioned else state.denoise_mask * sigma
    return StreamInput(
        latent=state.latent.astype(dtype),
        timesteps=timesteps.astype(dtype),
        sigma=mx.array([sigma], dtype=dtype),
        context=context,
        context_mask=None,
        rope=rope,
        keyframes_mask=state.keyframes_mask,
        self_attention_mask=state.attention_mask,
    )


@dataclass(frozen=True)
class PassSpec:
    """One forward of a step: the contexts (None: the stage's prompt) and the perturbations."""

    video_context: mx.array | None = None
    audio_context: mx.array | None = None
    perturbations: Perturbations = NO_PERTURBATION


def x0_forwards(
    stage: StageInputs, video: LatentState, audio: LatentState | None, sigma: float, specs: list[PassSpec]
) -> list[tuple[mx.array, mx.array | None]]:
    """ltx-core ``X0Model`` for each pass: velocity -> denoised tokens, ``x - v * (sigma x mask)`` per token, in
    float32. The passes run through the blocks together (``LTXModel.forward_passes``)."""
    passes, inputs = [], {}
    for spec in specs:
        key = (id(spec.video_context), id(spec.audio_context))  # passes with the same contexts share their inputs
        if key not in inputs:
            vc = stage.video_context if spec.video_context is None else spec.video_context
            ac = stage.audio_context if spec.audio_context is None else spec.audio_context
            inputs[key] = (
                _stream(video, vc, stage.video_rope, sigma, stage.dtype),
                None if audio is None else _stream(audio, ac, stage.audio_rope, sigma, stage.dtype),
            )
        passes.append(ForwardPass(*inputs[key], spec.perturbations))

    def denoised(state: LatentState, velocity: mx.array) -> mx.array:
        t = (state.denoise_mask * sigma)[..., None]
        return (state.latent.astype(mx.float32) - velocity.astype(mx.float32) * t).astype(stage.dtype)

    return [
        (denoised(video, v_out), None if audio is None else denoised(audio, a_out))
        for v_out, a_out in stage.velocities(passes)
    ]


def x0_forward(
    stage: StageInputs,
    video: LatentState,
    audio: LatentState | None,
    sigma: float,
    video_context: mx.array | None = None,
    audio_context: mx.array | None = None,
    perturbations: Perturbations = NO_PERTURBATION,
) -> tuple[mx.array, mx.array | None]:
    """One pass of ``x0_forwards``."""
    return x0_forwards(stage, video, audio, sigma, [PassSpec(video_context, audio_context, perturbations)])[0]


def simple_denoiser(stage: StageInputs) -> DenoiseFn:
    return lambda video, audio, sigma: x0_forward(stage, video, audio, sigma)


@dataclass(frozen=True)
class GuidanceParams:
    """ltx-core ``MultiModalGuiderParams`` (one per modality)."""

    cfg_scale: float = 1.0
    stg_scale: float = 0.0
    stg_blocks: tuple[int, ...] = ()
    rescale_scale: float = 0.0
    modality_scale: float = 1.0

    def combine(self, cond: mx.array, uncond: mx.array, perturbed: mx.array, isolated: mx.array) -> mx.array:
        """In float32 whatever the model dtype, as ltx-core 1.2.0's ``MultiModalGuider.calculate``; cast back."""
        dtype = cond.dtype
        cond, uncond, perturbed, isolated = (x.astype(mx.float32) for x in (cond, uncond, perturbed, isolated))
        pred = (
            cond
            + (self.cfg_scale - 1) * (cond - uncond)
            + self.stg_scale * (cond - perturbed)
            + (self.modality_scale - 1) * (cond - isolated)
        )
        if self.rescale_scale:
            factor = _std(cond) / _std(pred)
            pred = pred * (self.rescale_scale * factor + (1 - self.rescale_scale))
        return pred.astype(dtype)


def _std(x: mx.array) -> mx.array:
    """torch.std over the whole tensor (unbiased), as the guider's rescale uses."""
    x = x.astype(mx.float32)
    return mx.sqrt(mx.sum((x - mx.mean(x)) ** 2) / (x.size - 1))


# ltx-pipelines' LTX-2 defaults (the STG block is the model's own: 29 for LTX-2.0, 28 for LTX-2.3).
VIDEO_GUIDANCE = GuidanceParams(cfg_scale=3.0, stg_scale=1.0, rescale_scale=0.7, modality_scale=3.0)
AUDIO_GUIDANCE = GuidanceParams(cfg_scale=7.0, stg_scale=1.0, rescale_scale=0.7, modality_scale=3.0)


# One guidance pass: (denoised video, denoised audio or None). A pass runner gets a step's passes and the function
# that runs a list of them (block by block, each block's weights read once: ``x0_forwards``) and returns their
# results in order: all together on one process, or split over ranks (ltx_backend/parallel/guidance.py).
PassResult = tuple[mx.array, mx.array | None]
PassRunner = Callable[[list, Callable[[list], list[PassResult]]], list[PassResult]]


def run_together(passes: list, forward: Callable[[list], list[PassResult]]) -> list[PassResult]:
    return forward(passes)


def guided_denoiser(
    stage: StageInputs,
    negative_video: mx.array,
    negative_audio: mx.array | None,
    video_params: GuidanceParams,
    audio_params: GuidanceParams,
    run_passes: PassRunner = run_together,
) -> DenoiseFn:
    """ltx-pipelines ``multi_modal_guider_denoising_func``: conditional, unconditional (negative prompt),
    STG-perturbed and modality-isolated forwards, combined per modality."""
    negative_video, negative_audio = (
        negative_video.astype(stage.dtype),
        (None if negative_audio is None else negative_audio.astype(stage.dtype)),
    )

    def run(video: LatentState, audio: LatentState | None, sigma: float) -> tuple[mx.array, mx.array | None]:
        # Every pass this step needs, run through the blocks together; a pass a scale switches off is zero.
        specs = {"cond": PassSpec()}
        if video_params.cfg_scale != 1 or audio_params.cfg_scale != 1:
            specs["uncond"] = PassSpec(negative_video, negative_audio)
        if video_params.stg_scale or audio_params.stg_scale:
            skip = Perturbations(
                skip_video_self_attention=frozenset(video_params.stg_blocks) if video_params.stg_scale else frozenset(),
                skip_audio_self_attention=frozenset(audio_params.stg_blocks) if audio_params.stg_scale else frozenset(),
            )
            specs["perturbed"] = PassSpec(perturbations=skip)
        if video_params.modality_scale != 1 or audio_params.modality_scale != 1:
            specs["isolated"] = PassSpec(perturbations=Perturbations(skip_cross_modal=True))
        forward = lambda chosen: x0_forwards(stage, video, audio, sigma, chosen)  # noqa: E731
        outputs = dict(zip(specs, run_passes(list(specs.values()), forward), strict=True))
        zero = (mx.array(0.0), mx.array(0.0))
        cond, uncond, perturbed, isolated = (outputs.get(name, zero) for name in PASS_NAMES)
        out_video = video_params.combine(cond[0], uncond[0], perturbed[0], isolated[0])
        if audio is None:
            return out_video, None
        return out_video, audio_params.combine(cond[1], uncond[1], perturbed[1], isolated[1])

    return run


PASS_NAMES = ("cond", "uncond", "perturbed", "isolated")
