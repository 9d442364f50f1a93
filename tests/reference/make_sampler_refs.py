"""Generate tiny sampler / pipeline-denoising reference fixtures from Lightricks' ltx-pipelines + ltx-core (PyTorch).

Runs ltx-pipelines' own ``denoise_audio_video`` (noise_video_state / noise_audio_state -> ``euler_denoising_loop`` ->
clear_conditioning / unpatchify) with the tiny transformers of ``tests/fixtures/transformer`` (``t20`` = LTX-2.0,
``t23`` = LTX-2.3, loaded back from their official single-file checkpoints through ltx-core's builder and wrapped in
``X0Model``, as ``ModelLedger.transformer()`` returns them), float32, and records every random draw. Three runs per
version:

* ``distilled_s1``: ``DISTILLED_SIGMA_VALUES``, ``EulerDiffusionStep``, ``simple_denoising_func`` (positive contexts),
  conditionings = first-frame image (``VideoConditionByLatentIndex``) + keyframe (``VideoConditionByKeyframeIndex``).
* ``distilled_s2``: ``STAGE_2_DISTILLED_SIGMA_VALUES``, ``noise_scale = sigmas[0]``, a random initial video latent
  (stands for the upsampled one), the stage-1 audio output as initial audio latent, first-frame image only; same
  noiser / generator as stage 1 (as ``DistilledPipeline`` does).
* ``dev_s1``: ``LTX2Scheduler().execute(steps=4)``, ``multi_modal_guider_factory_denoising_func`` +
  ``create_multimodal_guider_factory`` wired as ``TI2VidTwoStagesPipeline`` wires them (LTX-2 default guider params,
  ``stg_blocks=[1]``), random negative contexts, no conditionings; fresh generator with the same seed.

plus ``LTX2Scheduler`` schedules. Output: ``tests/fixtures/sampler/refs.npz`` (float32; shapes / seeds int32); see
``tests/fixtures/sampler/README.md``. Deterministic (one thread, fixed zip timestamps): re-running reproduces the file
byte for byte. The script also re-implements the sampler by hand (state construction, noising, Euler, post-process,
multi-modal guidance) from the README's description and checks it against the pipeline run.

The transformer follows ltx-core 1.2.0's audio<->video cross-attention AdaLN timestep rule (``ltx_core_1_2_rule``,
patched into 1.0.0 and checked against ltx-core 1.2.0's fixture b first), and the keyframe follows 1.2.0's
single-pixel-frame RoPE time range ``[idx, idx + 1) / fps`` (same module). 1.2.0's other changes leave these runs
unchanged: its lerp noiser equals 1.0.0's for masks of 0 / 1 or noise scale 1 (every state here), and the
float32 guider math is what a float32 run computes anyway.

Two pipeline defaults are overridden for the tiny model (nothing else): ``PipelineComponents.video_latent_channels``
128 -> 16, and ``AudioLatentShape.from_video_pixel_shape`` (called by ``noise_audio_state`` with its defaults
channels 8, mel_bins 16) is given channels 2, mel_bins 4 while the runs execute. Run from the repository root
(after ``make_transformer_refs.py``, whose checkpoints and text contexts this script reads):

    /tmp/ltx-ref-venv/bin/python tests/reference/make_sampler_refs.py
"""

from __future__ import annotations

import os

os.environ.setdefault("TQDM_DISABLE", "1")  # euler_denoising_loop wraps the sigmas in tqdm; read at tqdm's import

import contextlib
import functools
import importlib
import sys
import types
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ltx_core_1_2_rule  # ltx-core 1.2.0's A<->V AdaLN timestep rule on 1.0.0
import make_transformer_refs as mtr
from ltx_core.components.diffusion_steps import EulerDiffusionStep
from ltx_core.components.guiders import (
    MultiModalGuiderParams,
    create_multimodal_guider_factory,
)
from ltx_core.components.noisers import GaussianNoiser
from ltx_core.components.schedulers import LTX2Scheduler
from ltx_core.conditioning.types.keyframe_cond import VideoConditionByKeyframeIndex
from ltx_core.conditioning.types.latent_cond import VideoConditionByLatentIndex
from ltx_core.guidance.perturbations import (
    BatchedPerturbationConfig,
    Perturbation,
    PerturbationConfig,
    PerturbationType,
)
from ltx_core.model.transformer.modality import Modality
from ltx_core.model.transformer.model import X0Model
from ltx_core.model.transformer.model_configurator import (
    LTXV_MODEL_COMFY_RENAMING_MAP,
    LTXModelConfigurator,
)
from ltx_core.types import AudioLatentShape, LatentState, VideoLatentShape, VideoPixelShape


def _import_pipeline_utils() -> tuple[types.ModuleType, types.ModuleType, types.ModuleType]:
    """``ltx_pipelines.utils.{helpers,samplers,constants}`` without PyAV / PIL.

    ``make_transformer_refs`` already registered ``ltx_pipelines`` and ``ltx_pipelines.utils`` as bare namespace
    packages (their ``__init__`` imports every pipeline). ``helpers`` also imports ``utils.media_io`` (PyAV, PIL) for
    three image helpers the sampler never calls; a stub module stands in for it.
    """
    name = "ltx_pipelines.utils.media_io"
    if name not in sys.modules:
        stub = types.ModuleType(name)

        def unavailable(*_args, **_kwargs):
            raise RuntimeError("media_io is stubbed out in the reference venv (no PyAV / PIL)")

        for attr in ("decode_image", "load_image_conditioning", "resize_aspect_ratio_preserving"):
            setattr(stub, attr, unavailable)
        sys.modules[name] = stub
    modules = ("helpers", "samplers", "constants")
    return tuple(importlib.import_module(f"ltx_pipelines.utils.{m}") for m in modules)


helpers, samplers, constants = _import_pipeline_utils()

OUT_DIR = mtr.REPO / "tests" / "fixtures" / "sampler"
TRANSFORMER_REFS = mtr.OUT_DIR / "refs.npz"
VERSIONS = ("t20", "t23")
DTYPE = torch.float32  # the pipelines run bfloat16; the references are float32
DEVICE = torch.device("cpu")

OUTPUT_SHAPE = VideoPixelShape(batch=1, frames=17, height=64, width=96, fps=24.0)
VIDEO_CHANNELS = mtr.VIDEO_CHANNELS  # 16
AUDIO_CHANNELS, AUDIO_MEL_BINS = mtr.AUDIO_LATENT_CHANNELS, mtr.AUDIO_MEL_BINS  # 2, 4
NOISE_SEED = constants.PipelineParams().seed  # 10: the pipelines' default --seed
INPUT_SEED = 2025  # conditioning latents, stage-2 initial latent, negative contexts
KEYFRAME_IDX, KEYFRAME_STRENGTH = 16, 0.75  # last pixel frame
STG_BLOCKS = [1]  # the tiny model has 2 blocks (real defaults: [29] for LTX-2.0, [28] for LTX-2.3)
VIDEO_GUIDER = replace(constants.LTX_2_PARAMS.video_guider_params, stg_blocks=STG_BLOCKS)
AUDIO_GUIDER = replace(constants.LTX_2_PARAMS.audio_guider_params, stg_blocks=STG_BLOCKS)
DEV_STEPS = 4
SCHEDULE_STEPS = (1, 4, 8, 30, 40)
SCHEDULE_LATENTS = {1536: (1, 128, 6, 16, 16), 6144: (1, 128, 6, 32, 32)}  # prod(shape[2:]) = token count


def tiny_components() -> object:
    """``PipelineComponents`` (patchifiers, scale factors (8, 32, 32)) with the tiny video latent channel count."""
    components = mtr.PipelineComponents(dtype=DTYPE, device=DEVICE)
    components.video_latent_channels = VIDEO_CHANNELS
    return components


@contextlib.contextmanager
def tiny_audio_latent_shape():
    """``noise_audio_state`` calls ``AudioLatentShape.from_video_pixel_shape(output_shape)`` with its defaults
    (8 channels x 16 mel bins = 128); give it the tiny transformer's 2 x 4 (audio_in_channels 8) instead."""
    saved = helpers.AudioLatentShape
    helpers.AudioLatentShape = types.SimpleNamespace(
        from_video_pixel_shape=functools.partial(
            AudioLatentShape.from_video_pixel_shape, channels=AUDIO_CHANNELS, mel_bins=AUDIO_MEL_BINS
        )
    )
    try:
        yield
    finally:
        helpers.AudioLatentShape = saved


def video_latent_shape() -> VideoLatentShape:
    return VideoLatentShape.from_pixel_shape(OUTPUT_SHAPE, latent_channels=VIDEO_CHANNELS)


def audio_latent_shape() -> AudioLatentShape:
    return AudioLatentShape.from_video_pixel_shape(OUTPUT_SHAPE, channels=AUDIO_CHANNELS, mel_bins=AUDIO_MEL_BINS)


def load_x0(version: str) -> X0Model:
    """The official tiny checkpoint through ltx-core's builder (make_transformer_refs.load_official), float32, wrapped
    the way ``ModelLedger.transformer()`` wraps it."""
    velocity = mtr.load_official(LTXModelConfigurator, mtr.official_path(version), LTXV_MODEL_COMFY_RENAMING_MAP)
    return X0Model(velocity).eval()


# ---------------------------------------------------------------------------
# Recording wrappers (transparent: they only copy what passes through)
# ---------------------------------------------------------------------------


class RecordingNoiser(GaussianNoiser):
    """``GaussianNoiser`` that records each draw (replayed from a copy of the generator state taken before it)."""

    def __init__(self, generator: torch.Generator):
        super().__init__(generator=generator)
        self.draws: list[tuple[str, torch.Tensor]] = []
        self.pending: list[str] = []

    def __call__(self, latent_state: LatentState, noise_scale: float = 1.0) -> LatentState:
        name = self.pending.pop(0)
        replay = torch.Generator().set_state(self.generator.get_state())
        out = super().__call__(latent_state, noise_scale)
        shape, dtype = latent_state.latent.shape, latent_state.latent.dtype
        noise = torch.randn(*shape, device=latent_state.latent.device, dtype=dtype, generator=replay)
        assert torch.equal(replay.get_state(), self.generator.get_state()), "replay consumed another amount"
        scaled = latent_state.denoise_mask * noise_scale
        assert torch.equal(out.latent, (noise * scaled + latent_state.latent * (1 - scaled)).to(dtype))
        self.draws.append((name, noise))
        return out


class RecordingTransformer:
    """Calls the X0Model and keeps (perturbations, outputs) of every forward."""

    def __init__(self, model: X0Model):
        self.model = model
        self.calls: list[tuple[BatchedPerturbationConfig | None, torch.Tensor, torch.Tensor]] = []

    def __call__(self, video: Modality, audio: Modality, perturbations: BatchedPerturbationConfig | None):
        video_out, audio_out = self.model(video=video, audio=audio, perturbations=perturbations)
        self.calls.append((perturbations, video_out.clone(), audio_out.clone()))
        return video_out, audio_out


@dataclass
class LoopRecord:
    initial: tuple[LatentState, LatentState] | None = None
    final: tuple[LatentState, LatentState] | None = None
    denoised: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)


def recording_loop(make_denoise_fn, record: LoopRecord):
    """The pipelines' ``denoising_loop`` closure (``euler_denoising_loop(..., denoise_fn=...)``), recording the
    noised initial states, each step's ``denoise_fn`` output (before post_process_latent) and the final states."""

    def denoising_loop(sigmas, video_state, audio_state, stepper):
        record.initial = (video_state.clone(), audio_state.clone())
        denoise_fn = make_denoise_fn()

        def recorded(video_state, audio_state, sigmas, step_index):
            denoised_video, denoised_audio = denoise_fn(video_state, audio_state, sigmas, step_index)
            record.denoised.append((denoised_video.clone(), denoised_audio.clone()))
            return denoised_video, denoised_audio

        out = samplers.euler_denoising_loop(
            sigmas=sigmas, video_state=video_state, audio_state=audio_state, stepper=stepper, denoise_fn=recorded
        )
        record.final = (out[0].clone(), out[1].clone())
        return out

    return denoising_loop


# ---------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------


def make_inputs() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(INPUT_SEED)
    frame = video_latent_shape()._replace(frames=1).to_torch_shape()  # (1, 16, 1, 2, 3)
    inputs = {
        "image_latent": torch.randn(frame, generator=gen),
        "keyframe_latent": torch.randn(frame, generator=gen),
        "stage2_initial_video_latent": torch.randn(video_latent_shape().to_torch_shape(), generator=gen),
    }
    text = np.load(TRANSFORMER_REFS)
    for version in VERSIONS:
        for kind in ("video", "audio"):
            positive = text[f"{version}.text.{kind}_context"]
            inputs[f"{version}.negative_{kind}_context"] = torch.randn(positive.shape, generator=gen)
    return inputs


def positive_contexts(version: str) -> tuple[torch.Tensor, torch.Tensor]:
    text = np.load(TRANSFORMER_REFS)
    return tuple(torch.from_numpy(text[f"{version}.text.{kind}_context"].copy()) for kind in ("video", "audio"))


# ---------------------------------------------------------------------------
# Runs
# ---------------------------------------------------------------------------


def run_denoise(record_name: str, noiser: RecordingNoiser, sigmas: torch.Tensor, make_denoise_fn, **kwargs):
    record = LoopRecord()
    noiser.pending = [f"{record_name}.noise.video", f"{record_name}.noise.audio"]
    with tiny_audio_latent_shape():
        video_state, audio_state = helpers.denoise_audio_video(
            output_shape=OUTPUT_SHAPE,
            noiser=noiser,
            sigmas=sigmas,
            stepper=EulerDiffusionStep(),
            denoising_loop_fn=recording_loop(make_denoise_fn, record),
            components=tiny_components(),
            dtype=DTYPE,
            device=DEVICE,
            **kwargs,
        )
    assert not noiser.pending
    return video_state, audio_state, record


def take_draws(noiser: RecordingNoiser) -> dict[str, torch.Tensor]:
    draws, noiser.draws = dict(noiser.draws), []
    return draws


def state_arrays(prefix: str, record: LoopRecord, out: tuple[LatentState, LatentState]) -> dict[str, torch.Tensor]:
    refs = {}
    for kind, state in zip(("video", "audio"), record.initial, strict=True):
        assert state.attention_mask is None  # the keyframe item adds no mask unless wrapped
        refs[f"{prefix}.state.{kind}_latent"] = state.latent  # noised, token layout
        refs[f"{prefix}.state.{kind}_clean_latent"] = state.clean_latent
        refs[f"{prefix}.state.{kind}_denoise_mask"] = state.denoise_mask
        refs[f"{prefix}.state.{kind}_positions"] = state.positions
    refs[f"{prefix}.denoised.video"] = torch.stack([v for v, _ in record.denoised])
    refs[f"{prefix}.denoised.audio"] = torch.stack([a for _, a in record.denoised])
    refs[f"{prefix}.final_tokens.video"] = record.final[0].latent  # before clear_conditioning (keyframe included)
    refs[f"{prefix}.final_tokens.audio"] = record.final[1].latent
    refs[f"{prefix}.out.video_latent"] = out[0].latent
    refs[f"{prefix}.out.audio_latent"] = out[1].latent
    return refs


@torch.no_grad()
def version_references(version: str, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    model = load_x0(version)
    v_ctx, a_ctx = positive_contexts(version)
    v_ctx_n, a_ctx_n = inputs[f"{version}.negative_video_context"], inputs[f"{version}.negative_audio_context"]
    refs: dict[str, torch.Tensor] = {}

    def image_cond() -> VideoConditionByLatentIndex:
        return VideoConditionByLatentIndex(latent=inputs["image_latent"], strength=1.0, latent_idx=0)

    def simple():
        return helpers.simple_denoising_func(video_context=v_ctx, audio_context=a_ctx, transformer=model)

    # DistilledPipeline: one generator / noiser for both stages.
    noiser = RecordingNoiser(torch.Generator(device=DEVICE).manual_seed(NOISE_SEED))
    stage_1_sigmas = torch.Tensor(constants.DISTILLED_SIGMA_VALUES).to(DEVICE)
    keyframe = VideoConditionByKeyframeIndex(
        keyframes=inputs["keyframe_latent"], frame_idx=KEYFRAME_IDX, strength=KEYFRAME_STRENGTH
    )
    s1 = run_denoise("distilled_s1", noiser, stage_1_sigmas, simple, conditionings=[image_cond(), keyframe])
    refs.update(take_draws(noiser))
    refs.update(state_arrays("distilled_s1", s1[2], s1[:2]))

    stage_2_sigmas = torch.Tensor(constants.STAGE_2_DISTILLED_SIGMA_VALUES).to(DEVICE)
    s2 = run_denoise(
        "distilled_s2",
        noiser,
        stage_2_sigmas,
        simple,
        conditionings=[image_cond()],
        noise_scale=stage_2_sigmas[0],
        initial_video_latent=inputs["stage2_initial_video_latent"],
        initial_audio_latent=s1[1].latent,
    )
    refs["distilled_s2.initial_audio_latent"] = s1[1].latent
    refs.update(take_draws(noiser))
    refs.update(state_arrays("distilled_s2", s2[2], s2[:2]))

    # TI2VidTwoStagesPipeline stage 1: LTX2Scheduler sigmas, multi-modal guider; fresh generator, same seed.
    noiser = RecordingNoiser(torch.Generator(device=DEVICE).manual_seed(NOISE_SEED))
    sigmas = LTX2Scheduler().execute(steps=DEV_STEPS).to(dtype=torch.float32, device=DEVICE)
    recorder = RecordingTransformer(model)

    def guided():
        return helpers.multi_modal_guider_factory_denoising_func(
            video_guider_factory=create_multimodal_guider_factory(params=VIDEO_GUIDER, negative_context=v_ctx_n),
            audio_guider_factory=create_multimodal_guider_factory(params=AUDIO_GUIDER, negative_context=a_ctx_n),
            v_context=v_ctx,
            a_context=a_ctx,
            transformer=recorder,
        )

    dev = run_denoise("dev_s1", noiser, sigmas, guided, conditionings=[])
    refs["dev_s1.sigmas"] = sigmas
    refs.update(take_draws(noiser))
    refs.update(state_arrays("dev_s1", dev[2], dev[:2]))
    assert len(recorder.calls) == 4 * DEV_STEPS, "cond, uncond, STG-perturbed, modality-isolated per step"
    passes = ("cond", "uncond", "perturbed", "isolated")
    for name, (_, video_out, audio_out) in zip(passes, recorder.calls[:4], strict=True):
        refs[f"dev_s1.step0.{name}.video"] = video_out
        refs[f"dev_s1.step0.{name}.audio"] = audio_out

    check_by_hand(version, model, refs, inputs, (v_ctx, a_ctx, v_ctx_n, a_ctx_n), recorder)
    return {f"{version}.{key}": value for key, value in refs.items()}


def ltx2_schedule_numpy(steps: int, tokens: int = 4096) -> np.ndarray:
    """``LTX2Scheduler.execute`` (defaults: max_shift 2.05, base_shift 0.95, stretch, terminal 0.1) re-done in numpy
    float32 with PyTorch's rounding: ``torch.linspace`` (CPU) is a fused multiply-add per element, one rounding
    (``1 + step * i`` for i < n // 2, else ``0 - step * (n - 1 - i)``, step = float32(-1 / steps)); ``python_float /
    tensor`` is ``python_float * reciprocal(tensor)``; every tensor op rounds to float32."""
    f32 = np.float32
    n = steps + 1
    step = np.float64(f32(-1.0) / f32(steps))
    i = np.arange(n, dtype=np.float64)
    sigmas = np.where(i < n // 2, 1.0 + step * i, 0.0 - step * (n - 1 - i)).astype(f32)  # float64 fma emulation
    mm = (2.05 - 0.95) / (4096 - 1024)
    shift = tokens * mm + (0.95 - mm * 1024)  # python floats (float64)
    e = f32(np.exp(shift))
    with np.errstate(divide="ignore", invalid="ignore"):
        shifted = e * (f32(1) / (e + (f32(1) / sigmas - f32(1))))
        sigmas = np.where(sigmas != 0, shifted, f32(0)).astype(f32)
        nonzero = sigmas != 0
        one_minus_z = f32(1) - sigmas[nonzero]
        scale = one_minus_z[-1] / f32(1.0 - 0.1)
        sigmas[nonzero] = f32(1) - one_minus_z / scale  # 0 / 0 = NaN when the only non-zero sigma is exactly 1
    return sigmas


def schedule_references() -> dict[str, torch.Tensor]:
    refs = {
        "sigmas.distilled": torch.Tensor(constants.DISTILLED_SIGMA_VALUES),
        "sigmas.stage2_distilled": torch.Tensor(constants.STAGE_2_DISTILLED_SIGMA_VALUES),
    }
    for steps in SCHEDULE_STEPS:
        refs[f"schedule.steps{steps}"] = LTX2Scheduler().execute(steps=steps)
        for tokens, shape in SCHEDULE_LATENTS.items():
            latent = torch.empty(shape, device="meta")  # only its shape is read
            refs[f"schedule.steps{steps}.tokens{tokens}"] = LTX2Scheduler().execute(steps=steps, latent=latent)
        # no latent == the default token count 4096 (what every LTX2Scheduler-using pipeline but *_hq passes)
        default = LTX2Scheduler().execute(steps=steps, latent=torch.empty((1, 128, 4, 32, 32), device="meta"))
        assert torch.equal(default, refs[f"schedule.steps{steps}"])
    for steps in range(1, 61):  # the numpy recipe in the README reproduces LTX2Scheduler bit for bit
        for tokens in (4096, *SCHEDULE_LATENTS):
            latent = torch.empty((1, 1, 1, 1, tokens), device="meta")
            torch_sigmas = LTX2Scheduler().execute(steps=steps, latent=latent).numpy()
            assert np.array_equal(torch_sigmas, ltx2_schedule_numpy(steps, tokens), equal_nan=True), (steps, tokens)
    return refs


# ---------------------------------------------------------------------------
# Independent re-implementation (what the README describes) vs the pipeline run
# ---------------------------------------------------------------------------


def expected_video_positions() -> np.ndarray:
    """(1, 3, 24, 2) float32: the 18 target tokens (causal time fix) + the 6 keyframe tokens (+ frame_idx; one pixel
    frame, so ltx-core 1.2.0's time range [idx, idx + 1))."""
    shape = video_latent_shape()
    fps = np.float32(OUTPUT_SHAPE.fps)

    def bounds(frames: int, causal: bool, offset: int, one_pixel_frame: bool = False) -> np.ndarray:
        f, h, w = np.meshgrid(np.arange(frames), np.arange(shape.height), np.arange(shape.width), indexing="ij")
        start = np.stack([f.ravel() * 8, h.ravel() * 32, w.ravel() * 32]).astype(np.int64)
        out = np.stack([start, start + np.array([[8], [32], [32]])], axis=-1)  # (3, T, 2)
        if causal:
            out[0] = np.maximum(out[0] + 1 - 8, 0)
        if one_pixel_frame:
            out[0, :, 1] = out[0, :, 0] + 1
        out[0] += offset
        out = out.astype(np.float32)
        out[0] /= fps
        return out

    main = bounds(shape.frames, causal=True, offset=0)
    key = bounds(1, causal=False, offset=KEYFRAME_IDX, one_pixel_frame=True)
    return np.concatenate([main, key], axis=1)[None]


def expected_audio_positions() -> np.ndarray:
    def seconds(i: np.ndarray) -> np.ndarray:
        mel = i.astype(np.float32) * np.float32(4)
        mel = np.maximum(mel + np.float32(1) - np.float32(4), np.float32(0))
        return mel * np.float32(160) / np.float32(16000)

    frames = np.arange(audio_latent_shape().frames)
    return np.stack([seconds(frames), seconds(frames + 1)], axis=-1)[None, None].astype(np.float32)


def patchify_video(latent: torch.Tensor) -> torch.Tensor:  # b c f h w -> b (f h w) c
    b, c = latent.shape[:2]
    return latent.reshape(b, c, -1).transpose(1, 2)


def patchify_audio(latent: torch.Tensor) -> torch.Tensor:  # b c t f -> b t (c f)
    b, c, t, f = latent.shape
    return latent.permute(0, 2, 1, 3).reshape(b, t, c * f)


def manual_loop(model, sigmas, noise, clean, mask, positions, noise_scale, contexts, guidance=None):
    """Noise -> per step: denoise (X0 forward, optionally guided) -> blend with clean by mask -> Euler."""
    xs = {k: noise[k] * (mask[k] * noise_scale) + clean[k] * (1 - mask[k] * noise_scale) for k in noise}
    for i in range(len(sigmas) - 1):
        sigma = sigmas[i]

        def forward(ctx, perturbations=None, sigma=sigma):
            mods = {
                k: Modality(
                    latent=xs[k],
                    sigma=sigma,
                    timesteps=mask[k] * sigma,
                    positions=positions[k],
                    context=ctx[k],
                    enabled=True,
                    context_mask=None,
                    attention_mask=None,
                )
                for k in xs
            }
            outputs = model(video=mods["video"], audio=mods["audio"], perturbations=perturbations)
            return dict(zip(("video", "audio"), outputs, strict=True))

        denoised = forward(contexts["pos"]) if guidance is None else guidance(forward)
        for k in xs:
            d = denoised[k] * mask[k] + clean[k] * (1 - mask[k])
            velocity = (xs[k] - d) / sigma.item()
            xs[k] = xs[k] + velocity * (sigmas[i + 1] - sigma)
    return xs


def manual_guidance(forward, contexts, params):
    def batched(*perturbations):
        return BatchedPerturbationConfig([PerturbationConfig(list(perturbations))])

    cond = forward(contexts["pos"])
    uncond = forward(contexts["neg"])
    perturbed = forward(
        contexts["pos"],
        batched(
            Perturbation(PerturbationType.SKIP_VIDEO_SELF_ATTN, STG_BLOCKS),
            Perturbation(PerturbationType.SKIP_AUDIO_SELF_ATTN, STG_BLOCKS),
        ),
    )
    isolated = forward(
        contexts["pos"],
        batched(
            Perturbation(PerturbationType.SKIP_A2V_CROSS_ATTN, None),
            Perturbation(PerturbationType.SKIP_V2A_CROSS_ATTN, None),
        ),
    )
    out = {}
    for k in cond:
        p: MultiModalGuiderParams = params[k]
        c = cond[k]
        pred = (
            c
            + (p.cfg_scale - 1) * (c - uncond[k])
            + p.stg_scale * (c - perturbed[k])
            + (p.modality_scale - 1) * (c - isolated[k])
        )
        factor = p.rescale_scale * (c.std() / pred.std()) + (1 - p.rescale_scale)
        out[k] = pred * factor
    return out


def check_by_hand(version, model, refs, inputs, contexts, recorder) -> None:
    v_ctx, a_ctx, v_ctx_n, a_ctx_n = contexts
    pos = {"pos": {"video": v_ctx, "audio": a_ctx}, "neg": {"video": v_ctx_n, "audio": a_ctx_n}}
    n_video, n_audio = video_latent_shape().token_count(), audio_latent_shape().frames
    image = patchify_video(inputs["image_latent"])
    key = patchify_video(inputs["keyframe_latent"])
    per_frame = image.shape[1]
    audio_pos = torch.from_numpy(expected_audio_positions())
    video_pos_all = torch.from_numpy(expected_video_positions())

    def compare(label: str, got: dict, prefix: str, exact: bool = True) -> None:
        for k, value in got.items():
            want = refs[f"{prefix}.out.{k}_latent"]
            unpatch = (
                value[:, :n_video].transpose(1, 2).reshape(want.shape)
                if k == "video"
                else value.reshape(1, n_audio, AUDIO_CHANNELS, AUDIO_MEL_BINS).permute(0, 2, 1, 3)
            )
            ok = torch.equal(unpatch, want) if exact else torch.allclose(unpatch, want, rtol=1e-5, atol=1e-6)
            assert ok, f"{version} {label} {k}: hand-written sampler differs (max {(unpatch - want).abs().max()})"

    # distilled stage 1
    mask_v = torch.ones(1, n_video + per_frame, 1)
    mask_v[:, :per_frame] = 0.0
    mask_v[:, n_video:] = 1.0 - KEYFRAME_STRENGTH
    clean_v = torch.zeros(1, n_video, VIDEO_CHANNELS)
    clean_v[:, :per_frame] = image
    clean_v = torch.cat([clean_v, key], dim=1)
    checks = {
        "state.video_denoise_mask": mask_v,
        "state.video_clean_latent": clean_v,
        "state.video_positions": video_pos_all,
        "state.audio_denoise_mask": torch.ones(1, n_audio, 1),
        "state.audio_clean_latent": torch.zeros(1, n_audio, AUDIO_CHANNELS * AUDIO_MEL_BINS),
        "state.audio_positions": audio_pos,
    }
    for name, want in checks.items():
        assert torch.equal(refs[f"distilled_s1.{name}"], want), f"{version} distilled_s1.{name}: README rule differs"
    mask = {"video": mask_v, "audio": torch.ones(1, n_audio, 1)}
    clean = {"video": clean_v, "audio": checks["state.audio_clean_latent"]}
    positions = {"video": video_pos_all, "audio": audio_pos}
    noise = {k: refs[f"distilled_s1.noise.{k}"] for k in ("video", "audio")}
    sigmas = torch.Tensor(constants.DISTILLED_SIGMA_VALUES)
    got = manual_loop(model, sigmas, noise, clean, mask, positions, 1.0, pos)
    compare("distilled_s1", got, "distilled_s1")
    assert torch.equal(refs["distilled_s1.out.video_latent"][:, :, :1], inputs["image_latent"])

    # distilled stage 2
    sigmas = torch.Tensor(constants.STAGE_2_DISTILLED_SIGMA_VALUES)
    mask_v = torch.ones(1, n_video, 1)
    mask_v[:, :per_frame] = 0.0
    clean_v = patchify_video(inputs["stage2_initial_video_latent"]).clone()
    clean_v[:, :per_frame] = image
    clean = {"video": clean_v, "audio": patchify_audio(refs["distilled_s2.initial_audio_latent"])}
    mask = {"video": mask_v, "audio": torch.ones(1, n_audio, 1)}
    positions = {"video": video_pos_all[:, :, :n_video], "audio": audio_pos}
    noise = {k: refs[f"distilled_s2.noise.{k}"] for k in ("video", "audio")}
    assert torch.equal(refs["distilled_s2.state.video_clean_latent"], clean_v)
    got = manual_loop(model, sigmas, noise, clean, mask, positions, sigmas[0], pos)
    compare("distilled_s2", got, "distilled_s2")

    # dev stage 1 (guided)
    sigmas = refs["dev_s1.sigmas"]
    mask = {"video": torch.ones(1, n_video, 1), "audio": torch.ones(1, n_audio, 1)}
    clean = {"video": torch.zeros(1, n_video, VIDEO_CHANNELS), "audio": checks["state.audio_clean_latent"]}
    noise = {k: refs[f"dev_s1.noise.{k}"] for k in ("video", "audio")}
    params = {"video": VIDEO_GUIDER, "audio": AUDIO_GUIDER}
    got = manual_loop(
        model, sigmas, noise, clean, mask, positions, 1.0, pos, guidance=lambda f: manual_guidance(f, pos, params)
    )
    compare("dev_s1", got, "dev_s1")
    # the recorded forwards are those a port must run: check their perturbation configs
    kinds = [
        None if ptb is None else sorted(p.type.value for p in ptb.perturbations[0].perturbations)
        for ptb, _, _ in recorder.calls[:4]
    ]
    assert kinds == [
        None,
        None,
        ["skip_audio_self_attn", "skip_video_self_attn"],
        ["skip_a2v_cross_attn", "skip_v2a_cross_attn"],
    ], kinds


# ---------------------------------------------------------------------------


def main() -> None:
    torch.set_num_threads(1)
    ltx_core_1_2_rule.apply()  # the references follow ltx-core 1.2.0 (see ltx_core_1_2_rule.py)
    print(f"ltx-core 1.0.0 + 1.2.0 rule reproduces fixture b: {ltx_core_1_2_rule.check_against_fixture()}")
    torch.use_deterministic_algorithms(True)
    OUT_DIR.mkdir(parents=True, exist_ok=True)

    assert audio_latent_shape() == AudioLatentShape(batch=1, channels=2, frames=18, mel_bins=4)
    assert video_latent_shape() == VideoLatentShape(batch=1, channels=16, frames=3, height=2, width=3)
    inputs = make_inputs()
    refs: dict[str, torch.Tensor] = {f"inputs.{k}": v for k, v in inputs.items()}
    refs["inputs.output_shape"] = torch.tensor(
        [OUTPUT_SHAPE.batch, OUTPUT_SHAPE.frames, OUTPUT_SHAPE.height, OUTPUT_SHAPE.width], dtype=torch.int32
    )
    refs["inputs.fps"] = torch.tensor([OUTPUT_SHAPE.fps])
    refs["inputs.video_latent_shape"] = torch.tensor(list(video_latent_shape()), dtype=torch.int32)
    refs["inputs.audio_latent_shape"] = torch.tensor(list(audio_latent_shape()), dtype=torch.int32)
    refs["inputs.noise_seed"] = torch.tensor([NOISE_SEED], dtype=torch.int32)
    refs["inputs.keyframe"] = torch.tensor([KEYFRAME_IDX, KEYFRAME_STRENGTH])
    refs.update(schedule_references())
    for version in VERSIONS:
        refs.update(version_references(version, inputs))

    arrays = {key: value.detach().cpu().numpy() for key, value in refs.items()}
    arrays = {k: v if v.dtype == np.int32 else v.astype(np.float32) for k, v in arrays.items()}
    mtr.save_npz(arrays, OUT_DIR / "refs.npz")
    print("self-checks passed: the hand-written sampler reproduces the pipeline runs bit for bit")
    print("refs.npz:")
    for key, array in arrays.items():
        print(f"  {key:44s} {array.dtype!s:8s} {array.shape!s:18s} std {array.astype(np.float64).std():.3f}")
    print(f"total {(OUT_DIR / 'refs.npz').stat().st_size / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
