"""Generate tiny reference fixtures for the generation modes from ltx-pipelines 1.0.0's own denoising code (PyTorch).

Each run builds its states the way its pipeline does (ltx-pipelines ``denoise_video_only`` / ``denoise_audio_video``
/ ``noise_video_state`` + ``noise_audio_state`` with the pipeline's conditioning items), runs
``euler_denoising_loop`` with the pipeline's denoising function on the tiny t20 / t23 transformers of
``tests/fixtures/transformer`` (float32, as ``make_sampler_refs.py`` loads them) and records every noise draw, the
noised initial states (latent, clean latent, denoise mask, positions), each step's denoised output and the final
latents. Shapes: 17 frames of 64 x 96 at 24 fps (latent 3 x 2 x 3, 18 audio latent frames).

* ``a2v_s1``: ``A2VidPipelineTwoStage`` stage 1: ``denoise_video_only`` (audio = a given "encoded" latent, noised
  with scale 0 then mask 0), ``ltx2_sigmas(4)``, ``multi_modal_guider_denoising_func`` with the LTX-2 video params
  and neutral ``MultiModalGuiderParams()`` for audio; first-frame image.
* ``a2v_s2``: stage 2: ``denoise_video_only``, ``STAGE_2_DISTILLED_SIGMA_VALUES``, noise scale sigma 0, a given
  upsampled video latent, the same frozen audio, ``simple_denoising_func``; first-frame image.
* ``retake_distilled``: ``RetakePipeline(distilled=True)``: source latents as initial latents,
  ``TemporalRegionMask(0.4, 0.7)`` on video and audio, ``DISTILLED_SIGMA_VALUES``, simple.
* ``retake_dev``: ``RetakePipeline`` dev: ``TemporalRegionMask(0.1, 0.3)`` on video, audio kept
  (``regenerate_audio=False`` -> ``TemporalRegionMask(0, 0)``), ``ltx2_sigmas(4)``, multi-modal guider (LTX-2 params).
* ``keyframe_s1``: ``KeyframeInterpolationPipeline`` stage 1: both images appended as keyframes (pixel frames 0 and
  16, ``image_conditionings_by_adding_guiding_latent``), guider factory (LTX-2 params), ``ltx2_sigmas(4)``.
* ``keyframe_s2``: its stage 2: the same keyframes, given video + audio initial latents, stage-2 distilled sigmas,
  noise scale sigma 0, simple.
* ``one_stage``: ``TI2VidOneStagePipeline``: ``combined_image_conditionings`` (image at frame 0 replaces latent 0,
  keyframe at 16 strength 0.75 appended), guider factory (LTX-2 params), ``ltx2_sigmas(4)``.

plus the audio input path: a 44.1 kHz stereo waveform through ltx-core's ``encode_audio`` (``AudioProcessor``:
resample to 16 kHz, log-mel, then the tiny LTX-2.3 audio encoder of ``tests/fixtures/audio``). torchaudio does not
install beside torch 2.13, so ``AudioProcessor``'s two torchaudio calls are served by a stand-in written here in
torch from torchaudio 2.x's formulas (``functional.resample`` sinc_interp_hann; ``transforms.MelSpectrogram`` =
``torch.stft`` magnitude @ ``melscale_fbanks``, Slaney scale and norm); everything else is ltx-core's own code.

``--rule 1.0`` runs ltx-core 1.0.0 as installed; ``--rule 1.2`` first applies ``ltx_core_1_2_rule.py`` (beside this
script: ltx-core 1.2.0's cross-attention timestep rule and single-pixel-frame keyframe time range patched into 1.0.0).
The rule used is stored as ``meta.rule`` (10 or 12). Run from the repository root, after ``make_transformer_refs.py``:

    /tmp/ltx-ref-venv/bin/python tests/reference/make_pipeline_refs.py --rule 1.2
"""

from __future__ import annotations

import argparse
import math
import sys
import types
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))


# ----------------------------------------------------------------------------- torchaudio stand-in (reference side)


def _resample(waveform: torch.Tensor, orig_freq: int, new_freq: int, lowpass_filter_width: int = 6,
              rolloff: float = 0.99) -> torch.Tensor:  # fmt: skip
    if orig_freq == new_freq:
        return waveform
    gcd = math.gcd(int(orig_freq), int(new_freq))
    orig, new = int(orig_freq) // gcd, int(new_freq) // gcd
    dtype = waveform.dtype
    base = min(orig, new) * rolloff
    width = math.ceil(lowpass_filter_width * orig / base)
    idx = torch.arange(-width, width + orig, dtype=dtype)[None, None] / orig
    t = torch.arange(0, -new, -1, dtype=dtype)[:, None, None] / new + idx
    t = (t * base).clamp(-lowpass_filter_width, lowpass_filter_width)
    window = torch.cos(t * math.pi / lowpass_filter_width / 2) ** 2
    t = t * math.pi
    kernel = torch.where(t == 0, torch.tensor(1.0).to(t), t.sin() / t) * (window * (base / orig))
    shape = waveform.shape
    flat = waveform.reshape(-1, shape[-1])
    length = flat.shape[-1]
    padded = torch.nn.functional.pad(flat, (width, width + orig))
    out = torch.nn.functional.conv1d(padded[:, None], kernel, stride=orig).transpose(1, 2).reshape(flat.shape[0], -1)
    out = out[..., : math.ceil(new * length / orig)]
    return out.reshape(*shape[:-1], out.shape[-1])


def _slaney_hz_to_mel(freq: float) -> float:
    return 15.0 + math.log(freq / 1000.0) / (math.log(6.4) / 27.0) if freq >= 1000.0 else freq / (200.0 / 3)


def _slaney_mel_to_hz(mels: torch.Tensor) -> torch.Tensor:
    freqs = (200.0 / 3) * mels
    log_t = mels >= 15.0
    freqs[log_t] = 1000.0 * torch.exp((math.log(6.4) / 27.0) * (mels[log_t] - 15.0))
    return freqs


class _MelSpectrogram(torch.nn.Module):
    """The arguments ltx-core's ``AudioProcessor`` passes (power 1, Slaney scale and norm, centred reflect frames)."""

    def __init__(self, sample_rate, n_fft, win_length, hop_length, f_min, f_max, n_mels, window_fn, center, pad_mode,
                 power, mel_scale, norm) -> None:  # fmt: skip
        super().__init__()
        assert (power, mel_scale, norm, center, win_length) == (1.0, "slaney", "slaney", True, n_fft)
        self.n_fft, self.hop_length, self.pad_mode = n_fft, hop_length, pad_mode
        self.register_buffer("window", window_fn(win_length))
        all_freqs = torch.linspace(0, sample_rate // 2, n_fft // 2 + 1)
        m_pts = torch.linspace(_slaney_hz_to_mel(f_min), _slaney_hz_to_mel(f_max), n_mels + 2)
        f_pts = _slaney_mel_to_hz(m_pts)
        f_diff = f_pts[1:] - f_pts[:-1]
        slopes = f_pts.unsqueeze(0) - all_freqs.unsqueeze(1)
        fb = torch.max(torch.zeros(1), torch.min(-slopes[:, :-2] / f_diff[:-1], slopes[:, 2:] / f_diff[1:]))
        self.register_buffer("fb", fb * (2.0 / (f_pts[2 : n_mels + 2] - f_pts[:n_mels])).unsqueeze(0))

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        shape = waveform.shape
        spec = torch.stft(waveform.reshape(-1, shape[-1]), self.n_fft, self.hop_length, self.n_fft, self.window,
                          center=True, pad_mode=self.pad_mode, onesided=True, return_complex=True).abs()  # fmt: skip
        spec = spec.reshape(*shape[:-1], *spec.shape[-2:])
        return torch.matmul(spec.transpose(-1, -2), self.fb).transpose(-1, -2)


import make_sampler_refs as msr  # noqa: E402  (first: transformers must not see a torchaudio module)

# isort: split
import make_audio_refs as mar  # noqa: E402  (registers an empty torchaudio stand-in)


def _fill_torchaudio() -> None:
    """Give the torchaudio stand-in the two functions ltx-core's ``AudioProcessor`` looks up when it runs."""
    torchaudio = sys.modules["torchaudio"]
    assert not hasattr(torchaudio, "__version__"), "a real torchaudio is installed: use it instead"
    sys.modules["torchaudio.transforms"].MelSpectrogram = _MelSpectrogram
    sys.modules["torchaudio.functional"].resample = _resample


_fill_torchaudio()

from ltx_core.components.diffusion_steps import EulerDiffusionStep, Res2sDiffusionStep  # noqa: E402
from ltx_core.components.guiders import (  # noqa: E402
    MultiModalGuider,
    MultiModalGuiderParams,
    create_multimodal_guider_factory,
)
from ltx_core.components.schedulers import LTX2Scheduler  # noqa: E402
from ltx_core.conditioning.types.keyframe_cond import VideoConditionByKeyframeIndex  # noqa: E402
from ltx_core.conditioning.types.latent_cond import VideoConditionByLatentIndex  # noqa: E402
from ltx_core.model.audio_vae import encode_audio  # noqa: E402
from ltx_core.types import Audio  # noqa: E402


def _import_retake() -> types.ModuleType:
    """``ltx_pipelines.retake`` (for ``TemporalRegionMask``) with the stubbed ``media_io`` given its other names."""
    stub = sys.modules["ltx_pipelines.utils.media_io"]
    for attr in ("decode_audio_from_file", "encode_video", "get_videostream_metadata", "load_video_conditioning"):
        setattr(stub, attr, stub.decode_image)
    utils = sys.modules["ltx_pipelines.utils"]  # a bare namespace package (make_transformer_refs)
    if not hasattr(utils, "ModelLedger"):
        utils.ModelLedger = None  # the retake module names it in its pipeline class only
    import importlib

    return importlib.import_module("ltx_pipelines.retake")


retake = _import_retake()
helpers, samplers, constants = msr.helpers, msr.samplers, msr.constants

OUT_DIR = msr.mtr.REPO / "tests" / "fixtures" / "modes"
VERSIONS = msr.VERSIONS
DTYPE, DEVICE = msr.DTYPE, msr.DEVICE
OUTPUT_SHAPE = msr.OUTPUT_SHAPE  # 17 x 64 x 96 @ 24 fps
SEED = msr.NOISE_SEED
INPUT_SEED = 2026
DEV_STEPS = 4
KEYFRAME_IDX, KEYFRAME_STRENGTH = 16, 0.75
RETAKE_DISTILLED_WINDOW, RETAKE_DEV_WINDOW = (0.4, 0.7), (0.1, 0.3)
AUDIO_RATE, AUDIO_SECONDS = 44100, 0.5


def make_inputs() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(INPUT_SEED)
    frame = msr.video_latent_shape()._replace(frames=1).to_torch_shape()
    video = msr.video_latent_shape().to_torch_shape()
    audio = msr.audio_latent_shape().to_torch_shape()
    return {
        "image_latent": torch.randn(frame, generator=gen),
        "keyframe_latent": torch.randn(frame, generator=gen),
        "encoded_audio": torch.randn(audio, generator=gen),  # a2v soundtrack (stands for the encoder output)
        "upsampled_video": torch.randn(video, generator=gen),  # stage-2 initial video latent
        "stage2_audio": torch.randn(audio, generator=gen),  # keyframe stage-2 initial audio (stage-1 output)
        "source_video": torch.randn(video, generator=gen),  # retake: the encoded source clip
        "source_audio": torch.randn(audio, generator=gen),
        "waveform": torch.rand((1, 2, int(AUDIO_RATE * AUDIO_SECONDS)), generator=gen) * 1.6 - 0.8,
    }


def guider_params() -> tuple[MultiModalGuiderParams, MultiModalGuiderParams]:
    return msr.VIDEO_GUIDER, msr.AUDIO_GUIDER  # LTX-2 defaults with STG block 1


def record(prefix: str, loop: msr.LoopRecord, draws: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    refs = {f"{prefix}.noise.{kind}": draws[f"{prefix}.noise.{kind}"] for kind in ("video", "audio")}
    for kind, state in zip(("video", "audio"), loop.initial, strict=True):
        refs[f"{prefix}.state.{kind}_latent"] = state.latent
        refs[f"{prefix}.state.{kind}_clean_latent"] = state.clean_latent
        refs[f"{prefix}.state.{kind}_denoise_mask"] = state.denoise_mask
        refs[f"{prefix}.state.{kind}_positions"] = state.positions
    refs[f"{prefix}.denoised.video"] = torch.stack([v for v, _ in loop.denoised])
    refs[f"{prefix}.denoised.audio"] = torch.stack([a for _, a in loop.denoised])
    refs[f"{prefix}.final_tokens.video"] = loop.final[0].latent
    refs[f"{prefix}.final_tokens.audio"] = loop.final[1].latent
    return refs


def res2s_recording_loop(make_denoise_fn, loop: msr.LoopRecord, draws: list[torch.Tensor]):
    """The HQ pipeline's ``res2s_audio_video_denoising_loop`` (its defaults: noise seeds -1 / 9999, bong iteration,
    legacy mode) with float32 latents instead of its default ``model_dtype=bfloat16`` (a float32 reference), recording
    every denoise call (step point, midpoint, final) and every SDE noise draw."""

    def recording_noise(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        noise = samplers._get_new_noise(x, generator)
        draws.append(noise.clone())
        return noise

    def denoising_loop(sigmas, video_state, audio_state, stepper):
        loop.initial = (video_state.clone(), audio_state.clone())
        denoise_fn = make_denoise_fn()

        def recorded(video_state, audio_state, sigmas, step_index):
            out = denoise_fn(video_state, audio_state, sigmas, step_index)
            loop.denoised.append((out[0].clone(), out[1].clone()))
            return out

        out = samplers.res2s_audio_video_denoising_loop(
            sigmas=sigmas, video_state=video_state, audio_state=audio_state, stepper=stepper, denoise_fn=recorded,
            new_noise_fn=recording_noise, model_dtype=torch.float32,
        )  # fmt: skip
        loop.final = (out[0].clone(), out[1].clone())
        return out

    return denoising_loop


def run(name: str, noiser: msr.RecordingNoiser, sigmas: torch.Tensor, make_denoise_fn, how: str, **kwargs):
    """One pipeline stage through the helper the pipeline calls (``how``), recording draws and loop."""
    loop = msr.LoopRecord()
    noiser.pending = [f"{name}.noise.video", f"{name}.noise.audio"]
    common = dict(noiser=noiser, components=msr.tiny_components(), dtype=DTYPE, device=DEVICE)
    with msr.tiny_audio_latent_shape():
        if how == "retake":  # RetakePipeline builds the two states itself
            video_conds, audio_conds = kwargs.pop("video_conditionings"), kwargs.pop("audio_conditionings")
            video_state, video_tools = helpers.noise_video_state(
                output_shape=OUTPUT_SHAPE, conditionings=video_conds, initial_latent=kwargs["initial_video_latent"],
                **common,
            )  # fmt: skip
            audio_state, audio_tools = helpers.noise_audio_state(
                output_shape=OUTPUT_SHAPE, conditionings=audio_conds, initial_latent=kwargs["initial_audio_latent"],
                **common,
            )  # fmt: skip
            video_state, audio_state = msr.recording_loop(make_denoise_fn, loop)(
                sigmas, video_state, audio_state, EulerDiffusionStep()
            )
            out_video = video_tools.unpatchify(video_tools.clear_conditioning(video_state)).latent
            out_audio = audio_tools.unpatchify(audio_tools.clear_conditioning(audio_state)).latent
        else:
            fn = helpers.denoise_video_only if how == "video_only" else helpers.denoise_audio_video
            sde_draws: list[torch.Tensor] = []
            if how == "res2s":
                stepper, loop_fn = Res2sDiffusionStep(), res2s_recording_loop(make_denoise_fn, loop, sde_draws)
            else:
                stepper, loop_fn = EulerDiffusionStep(), msr.recording_loop(make_denoise_fn, loop)
            out = fn(output_shape=OUTPUT_SHAPE, sigmas=sigmas, stepper=stepper, denoising_loop_fn=loop_fn, **common,
                     **kwargs)  # fmt: skip
            out_video = out.latent if how == "video_only" else out[0].latent
            out_audio = None if how == "video_only" else out[1].latent
    assert not noiser.pending
    refs = record(name, loop, msr.take_draws(noiser))
    if how == "res2s":  # per full step: substep video, substep audio, step video, step audio
        refs[f"{name}.sde_noise.video"] = torch.stack(sde_draws[0::2])
        refs[f"{name}.sde_noise.audio"] = torch.stack(sde_draws[1::2])
    refs[f"{name}.out.video_latent"] = out_video
    if out_audio is not None:
        refs[f"{name}.out.audio_latent"] = out_audio
    return refs


@torch.no_grad()
def version_references(version: str, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    model = msr.load_x0(version)
    v_ctx, a_ctx = msr.positive_contexts(version)
    neg = msr.make_inputs()  # the sampler fixtures' negative contexts (same seed, same draws)
    v_neg, a_neg = neg[f"{version}.negative_video_context"], neg[f"{version}.negative_audio_context"]
    video_params, audio_params = guider_params()
    dev_sigmas = LTX2Scheduler().execute(steps=DEV_STEPS).to(dtype=torch.float32)
    distilled = torch.Tensor(constants.DISTILLED_SIGMA_VALUES)
    stage2 = torch.Tensor(constants.STAGE_2_DISTILLED_SIGMA_VALUES)
    refs: dict[str, torch.Tensor] = {}

    def image():
        return VideoConditionByLatentIndex(latent=inputs["image_latent"], strength=1.0, latent_idx=0)

    def keyframe(frame_idx: int, key: str, strength: float):
        return VideoConditionByKeyframeIndex(keyframes=inputs[key], frame_idx=frame_idx, strength=strength)

    def simple():
        return helpers.simple_denoising_func(video_context=v_ctx, audio_context=a_ctx, transformer=model)

    def guided(video: MultiModalGuiderParams, audio: MultiModalGuiderParams, audio_negative=a_neg):
        return lambda: helpers.multi_modal_guider_denoising_func(
            video_guider=MultiModalGuider(params=video, negative_context=v_neg),
            audio_guider=MultiModalGuider(params=audio, negative_context=audio_negative),
            v_context=v_ctx, a_context=a_ctx, transformer=model,
        )  # fmt: skip

    def guided_factory():
        return helpers.multi_modal_guider_factory_denoising_func(
            video_guider_factory=create_multimodal_guider_factory(params=video_params, negative_context=v_neg),
            audio_guider_factory=create_multimodal_guider_factory(params=audio_params, negative_context=a_neg),
            v_context=v_ctx, a_context=a_ctx, transformer=model,
        )  # fmt: skip

    def noiser():
        return msr.RecordingNoiser(torch.Generator(device=DEVICE).manual_seed(SEED))

    # A2V: one generator for both stages; audio guider params neutral, its negative context unused (None).
    a2v = noiser()
    refs |= run("a2v_s1", a2v, dev_sigmas, guided(video_params, MultiModalGuiderParams(), None), "video_only",
                conditionings=[image()], initial_audio_latent=inputs["encoded_audio"])  # fmt: skip
    upsampled, soundtrack = inputs["upsampled_video"], inputs["encoded_audio"]
    refs |= run("a2v_s2", a2v, stage2, simple, "video_only", conditionings=[image()], noise_scale=stage2[0],
                initial_video_latent=upsampled, initial_audio_latent=soundtrack)  # fmt: skip

    mask = retake.TemporalRegionMask
    start, end = RETAKE_DISTILLED_WINDOW
    refs |= run("retake_distilled", noiser(), distilled, simple, "retake",
                video_conditionings=[mask(start, end, OUTPUT_SHAPE.fps)],
                audio_conditionings=[mask(start, end, OUTPUT_SHAPE.fps)],
                initial_video_latent=inputs["source_video"], initial_audio_latent=inputs["source_audio"])  # fmt: skip
    start, end = RETAKE_DEV_WINDOW
    refs |= run("retake_dev", noiser(), dev_sigmas, guided(video_params, audio_params), "retake",
                video_conditionings=[mask(start, end, OUTPUT_SHAPE.fps)],
                audio_conditionings=[mask(0.0, 0.0, OUTPUT_SHAPE.fps)],  # regenerate_audio=False
                initial_video_latent=inputs["source_video"], initial_audio_latent=inputs["source_audio"])  # fmt: skip

    kf = noiser()
    keyframes = [keyframe(0, "image_latent", 1.0), keyframe(KEYFRAME_IDX, "keyframe_latent", 1.0)]
    refs |= run("keyframe_s1", kf, dev_sigmas, guided_factory, "audio_video", conditionings=keyframes)
    refs |= run("keyframe_s2", kf, stage2, simple, "audio_video", conditionings=keyframes, noise_scale=stage2[0],
                initial_video_latent=upsampled, initial_audio_latent=inputs["stage2_audio"])  # fmt: skip

    conds = [image(), keyframe(KEYFRAME_IDX, "keyframe_latent", KEYFRAME_STRENGTH)]
    refs |= run("one_stage", noiser(), dev_sigmas, guided_factory, "audio_video", conditionings=conds)
    refs["sigmas.dev"] = dev_sigmas

    # TI2VidTwoStagesHQPipeline: res_2s stepper; stage 1 sigmas shifted by the latent's token count; HQ guider params
    # (STG off) through multi_modal_guider_denoising_func; one noiser for both stages.
    hq = noiser()
    hq_sigmas = LTX2Scheduler().execute(latent=torch.empty(msr.video_latent_shape().to_torch_shape()), steps=DEV_STEPS)
    hq_video, hq_audio = (
        constants.LTX_2_3_HQ_PARAMS.video_guider_params,
        constants.LTX_2_3_HQ_PARAMS.audio_guider_params,
    )
    refs |= run("hq_s1", hq, hq_sigmas.to(torch.float32), guided(hq_video, hq_audio), "res2s", conditionings=conds)
    # stage 2 with the first-frame image only: a fractional mask re-noised at scale < 1 is where ltx-core 1.0.0's and
    # 1.2.0's noisers differ, which is not what this run is about
    refs |= run("hq_s2", hq, stage2, simple, "res2s", conditionings=[image()], noise_scale=stage2[0],
                initial_video_latent=upsampled, initial_audio_latent=inputs["stage2_audio"])  # fmt: skip
    refs["sigmas.hq"] = hq_sigmas
    return {f"{version}.{key}": value for key, value in refs.items()}


@torch.no_grad()
def audio_encode_references(waveform: torch.Tensor) -> dict[str, torch.Tensor]:
    """ltx-core ``encode_audio`` of a 44.1 kHz waveform with the tiny LTX-2.3 audio encoder of tests/fixtures/audio
    (rebuilt by make_audio_refs' deterministic ``build_models``; checked against its stored encoder output)."""
    config = mar.build_config("ltx23")
    _, encoder, _ = mar.build_models("ltx23", config)
    stored = np.load(mar.OUT_DIR / "refs.npz")
    rebuilt = encoder(torch.from_numpy(stored["ltx23.encoder_in"].copy())).numpy()
    assert np.array_equal(rebuilt, stored["ltx23.encoder_out"]), "the rebuilt encoder is not the committed one"
    processor = retake_processor(encoder)
    mel = processor.waveform_to_mel(Audio(waveform=waveform, sampling_rate=AUDIO_RATE))
    latent = encode_audio(Audio(waveform=waveform, sampling_rate=AUDIO_RATE), encoder)
    resampled = _resample(waveform, AUDIO_RATE, encoder.sample_rate)
    return {"audio.waveform": waveform, "audio.resampled": resampled, "audio.mel": mel, "audio.latent": latent}


def retake_processor(encoder):
    from ltx_core.model.audio_vae.ops import AudioProcessor

    return AudioProcessor(encoder.sample_rate, encoder.mel_bins, encoder.mel_hop_length, encoder.n_fft)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rule", choices=("1.0", "1.2"), required=True, help="ltx-core numerics")
    args = parser.parse_args()
    if args.rule == "1.2":
        import ltx_core_1_2_rule  # beside this script (tests/reference)

        ltx_core_1_2_rule.apply()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    inputs = make_inputs()
    refs: dict[str, torch.Tensor] = {f"inputs.{k}": v for k, v in inputs.items() if k != "waveform"}
    refs["meta.rule"] = torch.tensor([10 if args.rule == "1.0" else 12], dtype=torch.int32)
    refs["inputs.windows"] = torch.tensor([*RETAKE_DISTILLED_WINDOW, *RETAKE_DEV_WINDOW])
    refs["inputs.keyframe"] = torch.tensor([KEYFRAME_IDX, KEYFRAME_STRENGTH])
    refs |= audio_encode_references(inputs["waveform"])
    for version in VERSIONS:
        refs |= version_references(version, inputs)
    arrays = {key: value.detach().cpu().numpy() for key, value in refs.items()}
    arrays = {k: v if v.dtype == np.int32 else v.astype(np.float32) for k, v in arrays.items()}
    msr.mtr.save_npz(arrays, OUT_DIR / "refs.npz")
    for key, array in arrays.items():
        print(f"  {key:44s} {array.shape!s:18s} std {array.astype(np.float64).std():.3f}")
    print(f"total {(OUT_DIR / 'refs.npz').stat().st_size / 1024:.0f} KiB (rule {args.rule})")


if __name__ == "__main__":
    main()
