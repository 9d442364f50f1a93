"""LoRAs in a job: which LoRAs each stage's transformer carries, and the IC-LoRA control video's conditioning.

Which LoRAs per stage, as ltx-pipelines builds its stage ledgers:

* every pipeline fuses the user's LoRAs into stage 1;
* ``ICLoraPipeline`` (a control video): stage 2 refines the upsampled video with the plain model (``loras=[]``): no
  IC-LoRA and no reference tokens;
* the two-stage dev pipelines (``TI2VidTwoStagesPipeline``, keyframe interpolation, a2v): stage 2 is stage 1's
  model plus the distilled LoRA (``with_additional_loras(distilled_lora)``), which makes the dev model a distilled one
  for the 3 refinement steps;
* ``TI2VidTwoStagesHQPipeline`` (``hq``): the distilled LoRA in both stages, at its own strengths per stage (the
  CLI's ``--distilled-lora-strength-stage-1/-2``, defaults 0.25 and 0.5) instead of the file's.

When the stages' LoRA sets differ the engine loads stage 2's transformer afresh from the checkpoint with its own
set (as the reference's ledger builds a new one), rather than subtracting the IC-LoRA from the fused weights
(``apply_loras`` with ``-strength``): that would re-round every touched bf16 weight and requantize quantized
layers, so stage 2 would not run the weights the reference runs, and a resident transformer reused job after job
would drift further from its checkpoint with every such round trip. A streamed transformer pays nothing for the
swap: only its non-block layers (~1%) are loaded, its blocks are read and fused per forward anyway.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import mlx.core as mx

from ltx_backend.errors import ErrorCode, LtxError
from ltx_backend.media.control_video import read_control_video, read_mask_video
from ltx_backend.models.transformer import LTXModel, TransformerConfig
from ltx_backend.pipeline.conditioning_reference import condition_by_reference_with_attention, downsample_mask_to_latent
from ltx_backend.pipeline.request import SINGLE_STAGE, GenerationRequest
from ltx_backend.pipeline.sampler import LatentState
from ltx_backend.weights.checkpoint import Checkpoint
from ltx_backend.weights.lora import LoraSpec, check_loras, reference_downscale_factor
from ltx_backend.weights.transformer import transformer_section

VAE_SPATIAL = 32  # the video VAE's spatial compression: the reference video's size must divide by it
HQ_DISTILLED_STRENGTHS = (0.25, 0.5)  # ti2vid_two_stages_hq: the distilled LoRA's strength in stage 1, stage 2


def check_loras_fit(ckpt: Checkpoint, loras: Sequence[LoraSpec], distilled: LoraSpec | None) -> None:
    """Every LoRA against the checkpoint's transformer from the headers and the config alone (nothing is loaded):
    ``lora_mismatch`` naming the request field (``loras[i]`` / ``distilled_lora``)."""
    if not loras and distilled is None:
        return
    model = LTXModel(TransformerConfig.from_section(transformer_section(ckpt)))  # lazy arrays, never evaluated
    named = [(f"loras[{index}]", spec) for index, spec in enumerate(loras)]
    named += [("distilled_lora", distilled)] if distilled is not None else []
    for field, spec in named:
        try:
            check_loras(model, [spec])
        except LtxError as error:
            error.details.setdefault("field", field)
            raise


def stage_loras(
    loras: Sequence[LoraSpec], distilled: LoraSpec | None, variant: str, request: GenerationRequest
) -> tuple[tuple[LoraSpec, ...], tuple[LoraSpec, ...]]:
    """The LoRAs of stage 1 and of stage 2 (see the module docstring)."""
    stage1 = tuple(loras)
    stage2 = () if request.controls else stage1
    if variant != "dev" or distilled is None:
        return stage1, stage2
    if request.layout == "hq":
        first, second = (replace(distilled, strength=strength) for strength in HQ_DISTILLED_STRENGTHS)
        return (*stage1, first), (*stage2, second)
    return stage1, (*stage2, distilled)


def stage_one_size(request: GenerationRequest) -> tuple[int, int]:
    """(height, width) of the first stage, the one that takes the reference tokens: half the output in two-stage
    layouts (ICLoraPipeline's), the output itself in single-stage ones (one-stage, retake, extend)."""
    halves = 1 if request.layout in SINGLE_STAGE else 2
    return request.height // halves, request.width // halves


def control_factor(request: GenerationRequest, loras: Sequence[LoraSpec]) -> int:
    """The reference video's downscale factor for a job with a control video (1 without one), checked before any
    work: the control video needs an IC-LoRA, and the stage-1 size divided by the factor must still be a size the
    video VAE encodes."""
    if not request.controls:
        return 1
    if not loras:
        raise LtxError(
            ErrorCode.INVALID_PARAMS,
            "control_video needs an IC-LoRA: the model alone does not follow a control video",
            "Load the IC-LoRA the control video is made for (--lora / load.loras).",
            field="control_video",
        )
    factor = reference_downscale_factor(loras)
    height, width = stage_one_size(request)
    for name, size, output in (("height", height, request.height), ("width", width, request.width)):
        if size % (factor * VAE_SPATIAL):
            step = output // size * factor * VAE_SPATIAL
            raise LtxError(
                ErrorCode.INVALID_PARAMS,
                f"{name} {output}: the IC-LoRA encodes its control video at 1/{factor} of the stage-1 size "
                f"({size} px), which is not a multiple of {VAE_SPATIAL}",
                f"Use a {name} that is a multiple of {step}.",
                field=name,
            )
    return factor


def encode_controls(encoder, request: GenerationRequest, factor: int, dtype: mx.Dtype) -> list[tuple]:
    """Each control video encoded at the stage-1 size / `factor` (frame-capped at the output's frames), with its
    reference tokens' attention weights (ICLoraPipeline ``_create_conditionings``: the mask video pooled onto the
    reference latent times the attention strength; the strength alone when below 1; else None) and its strength."""
    height, width = stage_one_size(request)
    encoded = []
    for control in request.controls:
        pixels = read_control_video(control.path, height // factor, width // factor, request.num_frames)
        latent = encoder(mx.array(pixels).astype(dtype))
        attention = None
        if control.mask_path is not None:
            mask = read_mask_video(control.mask_path, height, width, request.num_frames)  # at stage-1 size
            _, _, frames, latent_h, latent_w = latent.shape
            attention = mx.array(downsample_mask_to_latent(mask, frames, latent_h, latent_w))
            attention = attention * control.attention_strength
        elif control.attention_strength < 1.0:
            attention = control.attention_strength
        mx.eval(latent)
        encoded.append((latent, attention, control.strength))
    return encoded


def condition_on_controls(state: LatentState, encoded: list[tuple], request: GenerationRequest, factor: int):
    """Stage 1's video state with each control video's reference tokens appended in order (after the image
    conditionings, as ICLoraPipeline appends them) and the attention mask the state carries into every forward."""
    for latent, attention, strength in encoded:
        conditioned, mask = condition_by_reference_with_attention(
            state, state.attention_mask, latent, request.fps, factor, strength, attention
        )
        state = replace(conditioned, attention_mask=mask)
    return state
