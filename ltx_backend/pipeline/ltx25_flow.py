"""The LTX-2.5 steps of a generation, as small functions the engine calls at its few version-dependent points.

What changes with a 2.5 checkpoint (``ltx25-facts``), each decided from what the checkpoint says about itself:

* the text encoder is Gemma 4 unified (its file ``text_encoders/*.safetensors``), paired with the transformer by
  ``gemma_version`` and checked before anything loads (2.5 + Gemma 3, or 2.3 + Gemma 4: TEXT_ENCODER_MISMATCH);
  its text projection lives in the encoder's file, the connectors in the transformer's;
* the distilled stage 1 is Euler-ancestral (eta 1) with its own noise stream seeded ``seed + 10000``; stage 2 and
  the dev stages stay deterministic Euler;
* a dev release's stage 2 fuses the distilled LoRA it ships in ``loras/`` (ltx-pipelines' two-stage dev flow
  requires one) unless the caller names another;
* conditioning images are re-encoded through H.264 at CRF 18 (the video-VAE file's ``model_version`` >= 2.4);
* without ``num_frames`` the duration head picks the length from the prompt's connector outputs, bounded by
  ``min_seconds`` / ``max_seconds`` and snapped to 8k+1 frames;
* the keyframe marker needs nothing here: every video state marks its first latent frame (``sampler.video_state``)
  and the transformer adds the marker when it has one.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import mlx.core as mx

from ltx_backend import events
from ltx_backend.errors import ErrorCode, LtxError
from ltx_backend.media.image import CONDITIONING_CRF
from ltx_backend.models.duration_head import MAX_SECONDS, MIN_SECONDS, frame_bounds, predict_num_frames
from ltx_backend.pipeline.ancestral import ANCESTRAL_NOISE_SEED_OFFSET, SeededNoise, euler_ancestral_loop
from ltx_backend.pipeline.request import GenerationRequest
from ltx_backend.pipeline.text import TextEncoder
from ltx_backend.pipeline.text_gemma4 import Gemma4TextEncoder
from ltx_backend.weights.checkpoint import Checkpoint
from ltx_backend.weights.gemma import read_gemma_config
from ltx_backend.weights.gemma4 import open_gemma4
from ltx_backend.weights.lora import LoraSpec
from ltx_backend.weights.ltx25 import (
    GEMMA4,
    GEMMA_SOURCE_REQUIRED,
    LTX24_IMAGE_CRF,
    check_text_encoder,
    is_ltx25,
    load_duration_head,
    load_text_processor_ltx25,
    parse_version,
    text_encoder_family,
    uses_ancestral_stage_1,
)
from ltx_backend.weights.transformer import load_text_processor

TEXT_ENCODER_FOLDER = "text_encoders"  # the official release's folder (one Gemma 4 file)
DURATION_HEAD_FOLDER = "model_patches"
LORA_FOLDER = "loras"  # ltx-2.5-22b-distilled-lora-450-bf16.safetensors: the dev flow's stage-2 LoRA
DEFAULT_FRAMES = 121  # what a request without num_frames gets on models without a duration head


# --- construction: which text encoder, and does it belong to the model ---------------------------------------


def bundled_text_encoder(ckpt: Checkpoint) -> Path | None:
    """The text encoder shipped with an official 2.5 release (``text_encoders/<one file>``), or None."""
    folder = ckpt.root / TEXT_ENCODER_FOLDER
    files = sorted(folder.glob("*.safetensors")) if folder.is_dir() else []
    return files[0] if len(files) == 1 else None


def bundled_distilled_lora(ckpt: Checkpoint, variant: str) -> LoraSpec | None:
    """The distilled LoRA of an official 2.5 dev release (``loras/*distilled-lora*.safetensors``, one file) at
    ltx-pipelines' default strength 1.0, for the dev flow's stage 2; None for distilled models, other layouts and
    releases without one (or with several: the caller names one)."""
    folder = ckpt.root / LORA_FOLDER
    if variant != "dev" or not is_ltx25(ckpt) or not folder.is_dir():
        return None
    files = sorted(folder.glob("*distilled-lora*.safetensors"))
    return LoraSpec(files[0]) if len(files) == 1 else None


def check_pairing(ckpt: Checkpoint, text_encoder: Path) -> None:
    """ltx-core's pairing rule, before anything loads. For LTX-2/2.3 models an unreadable encoder is left to the
    loader's own errors; only a Gemma 4 encoder is refused here."""
    try:
        family, version = text_encoder_family(text_encoder)
    except LtxError:
        if is_ltx25(ckpt):
            raise
        return
    if is_ltx25(ckpt) or family == GEMMA4:
        check_text_encoder(ckpt, family, version, str(text_encoder))


def text_encoder(ckpt: Checkpoint, root: Path, dtype: mx.Dtype) -> TextEncoder | Gemma4TextEncoder:
    return Gemma4TextEncoder(root, dtype) if is_ltx25(ckpt) else TextEncoder(root, dtype)


def processor_spec(encoder: TextEncoder | Gemma4TextEncoder) -> tuple:
    """What the text processor built for `encoder` depends on: the Gemma 3 hidden states' shape, or the Gemma 4
    file that holds LTX-2.5's text projection. Hashable: it keys the resident processor."""
    if isinstance(encoder, Gemma4TextEncoder):
        return (str(encoder.source.path),)
    return (encoder.hidden_size, encoder.num_states)


def processor_spec_of(ckpt: Checkpoint, text_encoder: Path) -> tuple:
    """``processor_spec`` from the encoder's config alone (nothing loaded)."""
    if is_ltx25(ckpt):
        return (str(open_gemma4(text_encoder).path),)
    _, config = read_gemma_config(text_encoder)
    return (config.hidden_size, config.num_hidden_layers + 1)


def text_processor(ckpt: Checkpoint, dtype: mx.Dtype, *spec):
    """The feature extractor + connectors for the encoder's hidden states (2.5: the projection from the TE file)."""
    if is_ltx25(ckpt):
        return load_text_processor_ltx25(ckpt, open_gemma4(spec[0]), dtype)
    return load_text_processor(ckpt, dtype, *spec)


# --- sampling ----------------------------------------------------------------------------------------------


def stage1_loop(ckpt: Checkpoint, variant: str, seed: int, default):
    """The stage-1 loop (``stage_plan.LOOPS``' signature): Euler-ancestral for a distilled 2.5 model (its noise
    stream seeded ``seed + 10000``, drawn video first, then audio), else `default`."""
    if not (variant == "distilled" and uses_ancestral_stage_1(ckpt)):
        return default
    noise = SeededNoise(seed % (2**64 - ANCESTRAL_NOISE_SEED_OFFSET))

    def loop(sigmas, video, audio, denoise, on_step, _seed):
        return euler_ancestral_loop(sigmas, video, audio, denoise, noise, on_step=on_step)

    return loop


def image_crf(ckpt: Checkpoint) -> int:
    """ltx-pipelines ``default_image_crf``: 18 when the video VAE's ``model_version`` is 2.4 or later, else 33. The
    version is the VAE file's (official layouts), else the checkpoint's."""
    version = None
    if ckpt.has("vae"):
        for file in ckpt.component("vae").files.values():
            version = version or parse_version((getattr(file, "metadata", {}) or {}).get("model_version"))
    if version is None:
        from ltx_backend.weights.ltx25 import model_version

        version = model_version(ckpt)
    return LTX24_IMAGE_CRF if version is not None and version[:2] >= GEMMA_SOURCE_REQUIRED else CONDITIONING_CRF


# --- duration ----------------------------------------------------------------------------------------------


def duration_head_path(ckpt: Checkpoint) -> Path | None:
    folder = ckpt.root / DURATION_HEAD_FOLDER
    files = sorted(folder.glob("*duration-head*.safetensors")) if folder.is_dir() else []
    return files[0] if files else None


def seconds_bounds(request: GenerationRequest) -> tuple[float, float]:
    low = MIN_SECONDS if request.min_seconds is None else request.min_seconds
    return low, MAX_SECONDS if request.max_seconds is None else request.max_seconds


def plan_frames(ckpt: Checkpoint, request: GenerationRequest) -> GenerationRequest:
    """Before anything loads: a request without ``num_frames`` keeps it open for a 2.5 model with a duration head
    (it is planned at its longest allowed length; `resolve_frames` decides after text encoding); any other model
    gets the default length, with a warning when duration bounds were given for nothing."""
    if request.num_frames is not None:
        return request
    if is_ltx25(ckpt):
        if duration_head_path(ckpt) is None:
            raise LtxError(
                ErrorCode.INVALID_PARAMS,
                f"{ckpt.root} has no duration head ({DURATION_HEAD_FOLDER}/*duration-head*.safetensors), so the "
                "length cannot be chosen automatically",
                "Give num_frames (--num-frames), or add the model's duration head file.",
                field="num_frames",
            )
        return request
    warnings = request.warnings
    if request.min_seconds is not None or request.max_seconds is not None:
        warnings += ("min_seconds/max_seconds bound the LTX-2.5 duration head; this model has none: "
                     f"using {DEFAULT_FRAMES} frames",)  # fmt: skip
    return replace(request, num_frames=DEFAULT_FRAMES, warnings=warnings)


def longest_frames(request: GenerationRequest) -> int:
    """The most frames the duration head may choose: what the memory planner must allow for."""
    _, high = frame_bounds(request.fps, *seconds_bounds(request))
    return (high - 1) // 8 * 8 + 1


def resolve_frames(
    ckpt: Checkpoint, request: GenerationRequest, video_context: mx.array, audio_context: mx.array, emit
) -> GenerationRequest:
    """The request with ``num_frames`` chosen by the duration head from the positive prompt's connector outputs
    (video and audio, as ltx-pipelines' ``DurationPredictor``); reported as a ``DurationChosen`` event."""
    if request.num_frames is not None:
        return request
    head = load_duration_head(duration_head_path(ckpt), ckpt.config, mx.float32)
    low, high = seconds_bounds(request)
    video = video_context.astype(mx.float32)
    audio = audio_context.astype(mx.float32)
    choice = predict_num_frames(head, video, audio, request.fps, low, high)
    emit(events.DurationChosen(choice.num_frames, round(choice.num_frames / request.fps, 4),
                               round(choice.predicted_seconds, 4), choice.clamped))  # fmt: skip
    if choice.clamped:
        emit(events.Warning(f"the predicted duration {choice.predicted_seconds:.2f} s is outside [{low:g}, {high:g}] "
                            f"s: using {choice.num_frames} frames"))  # fmt: skip
    return replace(request, num_frames=choice.num_frames)
