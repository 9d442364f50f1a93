"""How much memory a job needs, phase by phase, and a clear refusal up front when it will not fit.

The engine runs its phases one after another and frees each model before loading the next, so the job's peak
is the largest phase, not their sum. Each phase needs the weights it holds (counted from the checkpoint
headers, at the dtype they are loaded in) plus a working-memory estimate from simple formulas. Nothing here
reads tensor data or builds a model: an estimate takes milliseconds.

Working memory (all figures at bf16 compute; float32 doubles them):

* **denoising** (the transformer, resident through stage 1, the x2 upsample and stage 2; stage 2 at full
  resolution is the peak): ``TRANSFORMER_BYTES_PER_PARAM * params + TRANSFORMER_BYTES_PER_TOKEN_CHANNEL *
  (video_tokens * video_dim + audio_tokens * audio_dim)``. Calibrated on the H100 measurements of
  ``benchmarks/transformer_forward.py --compile`` (126 audio and 1024 text tokens; the forward submitted block
  by block with one block in flight, as the sampler runs it): LTX-2.0 bf16 (37.75 GB of weights) peaks at
  38.66 GB at 1536 video tokens and 41.05 GB at 6144; LTX-2.3 Q4 (11.35 GB, large products dequantized on
  CUDA) at 13.17 and 15.80 GB. Per token-channel, 127 B (bf16) and 139 B (Q4) between the two sizes: 140 B. The
  rest, up to 0.9 GB at 1536 tokens (runtime workspaces, RoPE tables, text context, Q4's dequantized weights of
  the blocks in flight), is 0.05 B per parameter. The fit is linear in tokens (MLX's fused attention does not
  hold the score matrix); past 6144 tokens it is an extrapolation.
  With the blocks streamed (``streaming``, weights/streaming.py) the phase holds the non-block weights and
  ``STREAMED_BLOCKS`` of the largest block instead of all 48, plus the blocks the planner holds once read in the
  memory left (``KEPT_SHARE`` of it, one largest block each); the working memory is the same formula (the guided
  passes of a step run block by block, each block's temporaries freed before the next is submitted). Not yet
  checked against a measured peak: ``benchmarks/low_ram.py`` measures it.
* **video_decode**: ``VAE_BYTES_PER_PARAM * decoder_params + VAE_BYTES_PER_VOXEL * largest_tile_voxels``, where
  a tile's voxels are its output frames x pixels (the whole video untiled), from `vae_tiling`'s own tile
  layout (a decoder call that batches same-shape tiles stays within the largest tile's voxels; one call runs
  at a time). A least-squares fit to the 768x512x121 H100 measurements of ``benchmarks/vae_decode.py`` (decoder
  528 M parameters, 1.06 GB): untiled 13.7 GB, default tiling 5.42 GB, auto 4.05 GB, aggressive 3.32 GB; the
  fit gives 13.67 / 5.57 / 4.02 / 3.23 GB (within 3%). Those tilings blended overlapping temporal tiles; time is now
  decoded in exact chunks (`vae_time_chunks`), whose last call also gives the decoder's delayed frames
  (`TileLayout.largest` counts them) and which keep each tile's input to the last decoder segment meanwhile:
  8 bytes of every voxel decoded (`vae_tiling.KEPT_VOXEL_SHARE` of ``VAE_BYTES_PER_VOXEL``; LTX-2.3: 256 channels
  at 1/64 of the pixels, every frame; 2.0: half that), derived, not measured. `vae_tiling.decode_memory` counts
  both, in voxels, for the estimate and for the tiling searches alike.
* **text_encoding**: the hidden states of every layer for every prompt (``(layers + 1) x 1024 x hidden``), once
  as the per-layer list and once stacked, plus one layer's MLP and attention scores. Derived from the shapes,
  not measured; small next to Gemma's weights.
* **connectors**: the stacked hidden states of every prompt, held and cast once.
* **audio_decode**: ``AUDIO_BYTES_PER_SECOND`` of audio (audio VAE decoder + vocoder activations, an upper
  bound derived from the HiFi-GAN widths: at most ~768 K values per second per stage, a few alive at once).
* **image_encoding** (keyframes only): the VAE encoder on one full-size frame, with the decode coefficients.
* **source_encoding** (a2v, retake, extend): the video VAE encoder on the whole source clip at once (retake,
  extend; the reference encodes it in one call), with the decode coefficients, and the audio VAE encoder (stored
  dtype) with ``AUDIO_BYTES_PER_SECOND`` of the soundtrack. Derived, not measured.
* A stage at full size with guidance (one-stage, retake and extend on a dev checkpoint) runs its guided passes
  (up to ``GUIDED_PASSES``) through each block together, so its token term counts once per pass; the two-stage
  layouts guide at half size only (a quarter of the tokens), below stage 2's single pass. extend counts the joined
  clip's tokens (the request's frames are the joined count after validation).

Weights: floating-point tensors at the compute dtype (the engine casts them), packed quantized tensors at their
stored size; with ``quantize`` (load-time quantization of a bf16 checkpoint) the transformer's block linears
count ``bits / 8`` bytes per weight plus a scale and a bias per group of 64. The audio models are loaded in their
stored dtype.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import mlx.core as mx

from ltx_backend import events
from ltx_backend.errors import ErrorCode, LtxError
from ltx_backend.models.vae_tiling import (
    TilingConfig,
    decode_memory,
    decode_work,
    generate_av_tiling,
    latent_cells,
    least_work_tiling,
    tile_layout,
    tiling_for,
)
from ltx_backend.models.video_vae import SPACE_SCALE
from ltx_backend.pipeline.request import GenerationRequest
from ltx_backend.weights.checkpoint import Checkpoint, Component
from ltx_backend.weights.safetensors_file import DTYPE_SIZES, TensorInfo

ENV_LIMIT = "LTX_BACKEND_MEMORY_LIMIT_GB"
GB = 1e9

# Calibration constants (bf16 compute); see the module docstring for where each comes from.
TRANSFORMER_BYTES_PER_PARAM = 0.05
TRANSFORMER_BYTES_PER_TOKEN_CHANNEL = 140.0
VAE_BYTES_PER_PARAM = 3.54
VAE_BYTES_PER_VOXEL = 226.0
AUDIO_BYTES_PER_SECOND = 64e6
# Block weight sets alive at once while streaming: the block the device runs, the one being built, the one the reader
# thread fills (a numpy buffer) and its copy into MLX arrays.
STREAMED_BLOCKS = 4
# Of the memory a streamed denoising leaves, the share the planner fills with blocks held once read (each one held is
# one block fewer read per step); the rest is margin for the estimate.
KEPT_SHARE = 0.8
UNTILED_SHARE = 0.6  # of the available memory an untiled decode may take under --tiling auto
PROMPT_TOKENS = 1024  # prompts are padded to this length (pipeline/text.py)
GROUP_SIZE = 64  # quantization group (weights/transformer.py)

FLOAT_DTYPES = {"F16", "BF16", "F32", "F64", "F8_E4M3", "F8_E5M2"}

TEXT_ENCODING, CONNECTORS, IMAGE_ENCODING = "text_encoding", "connectors", "image_encoding"
DENOISING, AUDIO_DECODE, VIDEO_DECODE = "denoising", "audio_decode", "video_decode"
SOURCE_ENCODING = "source_encoding"
GUIDED_PASSES = 4  # conditional, unconditional, STG-perturbed, modality-isolated
PHASE_LABELS = {
    TEXT_ENCODING: "text encoding",
    CONNECTORS: "text connectors",
    IMAGE_ENCODING: "image encoding",
    SOURCE_ENCODING: "source encoding",
    DENOISING: "denoising",
    AUDIO_DECODE: "audio decode",
    VIDEO_DECODE: "video decode",
}


@dataclass(frozen=True)
class PhaseMemory:
    """What one phase holds at its peak, in bytes."""

    name: str
    weights: int
    activations: int
    detail: str = ""

    @property
    def total(self) -> int:
        return self.weights + self.activations

    @property
    def label(self) -> str:
        return PHASE_LABELS.get(self.name, self.name)


@dataclass(frozen=True)
class MemoryPlan:
    """Per-phase needs of one job; `options` maps CLI flags (``--tiling aggressive``, ``--quantize 4``, ...) to
    the job's peak with them, for the hint when the job does not fit."""

    phases: dict[str, PhaseMemory]
    options: dict[str, int] = field(default_factory=dict)
    option_phases: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def peak(self) -> int:
        return max((phase.total for phase in self.phases.values()), default=0)

    @property
    def peak_phase(self) -> PhaseMemory:
        return max(self.phases.values(), key=lambda phase: phase.total)

    def summary(self) -> str:
        return ", ".join(f"{p.label} {p.total / GB:.1f} GB" for p in self.phases.values())

    def to_dict(self) -> dict[str, object]:
        return {
            "peak_gb": round(self.peak / GB, 2),
            "phases": {
                name: {"weights_gb": round(p.weights / GB, 2), "activations_gb": round(p.activations / GB, 2)}
                for name, p in self.phases.items()
            },
        }


# --- weights -----------------------------------------------------------------------------------------------------


def _itemsize(dtype: mx.Dtype | None) -> int | None:
    return None if dtype is None else dtype.size


def _activation_scale(itemsize: int | None) -> float:
    """Working memory relative to the bf16 the calibration ran in (float32: twice; as stored: as bf16)."""
    return (itemsize or 2) / 2


def _tensor_bytes(info: TensorInfo, itemsize: int | None) -> int:
    count = math.prod(info.shape)
    if info.dtype in FLOAT_DTYPES and itemsize is not None:
        return count * itemsize
    return count * DTYPE_SIZES[info.dtype]


def _weight_bytes(
    tensors: dict[str, TensorInfo],
    itemsize: int | None,
    keep: Callable[[str], str | None] = lambda key: key,
    quantize: Callable[[str, TensorInfo], int | None] | None = None,
) -> tuple[int, int]:
    """(bytes, parameters) of the tensors whose key `keep` maps to a parameter; `quantize` may override a size."""
    total = params = 0
    for key, info in tensors.items():
        name = keep(key)
        if name is None:
            continue
        params += math.prod(info.shape)
        size = quantize(name, info) if quantize is not None else None
        total += size if size is not None else _tensor_bytes(info, itemsize)
    return total, params


def _component(ckpt: Checkpoint, *names: str) -> Component | None:
    for name in names:
        if ckpt.has(name):
            return ckpt.component(name)
    return None


def _load_time_quantizer(bits: int, itemsize: int) -> Callable[[str, TensorInfo], int | None]:
    """Bytes of a transformer-block linear once `nn.quantize`d (as `load_transformer` does); None for the rest."""
    from ltx_backend.weights.transformer import QUANTIZED_SUFFIXES

    def size(name: str, info: TensorInfo) -> int | None:
        if not name.endswith(".weight") or len(info.shape) != 2 or info.shape[1] % GROUP_SIZE:
            return None
        path = name[: -len(".weight")]
        if not (path.startswith("transformer_blocks.") and path.endswith(QUANTIZED_SUFFIXES)):
            return None
        count = math.prod(info.shape)
        return count * bits // 8 + 2 * (count // GROUP_SIZE) * itemsize  # packed weight, scales, biases

    return size


def _transformer_weights(
    ckpt: Checkpoint, itemsize: int | None, quantize: int | None, streaming: bool = False, kept_blocks: int = 0
) -> tuple[int, int]:
    """(bytes held, parameters). Streaming holds the non-block weights and ``STREAMED_BLOCKS`` of the largest
    block, plus the `kept_blocks` it holds, read as stored (load-time quantization applies to resident weights
    only)."""
    from ltx_backend.models.transformer import sanitize_transformer_key

    component = _component(ckpt, "transformer")
    if component is None:
        return 0, 0
    quantizer = None
    if quantize is not None and not component.quantized_paths and not streaming:
        quantizer = _load_time_quantizer(quantize, itemsize or 2)
    if not streaming:
        return _weight_bytes(component.tensors, itemsize, sanitize_transformer_key, quantizer)
    blocks, rest, params = _block_bytes(component, itemsize)
    return rest + (STREAMED_BLOCKS + kept_blocks) * max(blocks.values(), default=0), params


def _block_bytes(component: Component, itemsize: int | None) -> tuple[dict[str, int], int, int]:
    """The transformer's bytes as streaming reads them (stored, cast to `itemsize`): per block index, outside the
    blocks, and its parameter count."""
    from ltx_backend.models.transformer import sanitize_transformer_key

    blocks: dict[str, int] = {}
    rest = params = 0
    for key, info in component.tensors.items():
        name = sanitize_transformer_key(key)
        if name is None:
            continue
        params += math.prod(info.shape)
        size = _tensor_bytes(info, itemsize)
        if name.startswith("transformer_blocks."):
            index = name.split(".", 2)[1]
            blocks[index] = blocks.get(index, 0) + size
        else:
            rest += size
    return blocks, rest, params


def _streamed_blocks(ckpt: Checkpoint, itemsize: int | None) -> tuple[int, int]:
    """(number of transformer blocks, bytes of the largest one as streaming reads it)."""
    component = _component(ckpt, "transformer")
    blocks = _block_bytes(component, itemsize)[0] if component is not None else {}
    return len(blocks), max(blocks.values(), default=0)


def _transformer_dims(ckpt: Checkpoint) -> tuple[int, int]:
    from ltx_backend.weights.transformer import transformer_section

    section = transformer_section(ckpt)
    video = int(section.get("num_attention_heads", 32)) * int(section.get("attention_head_dim", 128))
    audio = int(section.get("audio_num_attention_heads", 32)) * int(section.get("audio_attention_head_dim", 64))
    return video, audio


def _logical_params(component: Component | None, bits: int | None) -> int:
    """Parameter count as bf16 weights, whether stored quantized or not (activations scale with these)."""
    if component is None:
        return 0
    total = 0
    quantized = {path + ".weight" for path in component.quantized_paths}
    for key, info in component.tensors.items():
        if key.endswith((".scales", ".biases")) and key.rsplit(".", 1)[0] in component.quantized_paths:
            continue
        count = math.prod(info.shape)
        total += count * 32 // (bits or 4) if key in quantized and info.dtype == "U32" else count
    return total


# --- phases ------------------------------------------------------------------------------------------------------


def _text_encoder(root: Path):
    """(config, component, key sanitizer) of a Gemma 3 folder or a Gemma 4 (LTX-2.5) file or folder."""
    from ltx_backend.weights.ltx25 import GEMMA4, text_encoder_family

    if text_encoder_family(root)[0] == GEMMA4:
        from ltx_backend.models.gemma4 import sanitize_gemma4_key
        from ltx_backend.weights.gemma4 import open_gemma4

        source = open_gemma4(root)
        return source.config, source.component(), sanitize_gemma4_key
    from ltx_backend.models.gemma3 import sanitize_gemma_key
    from ltx_backend.weights.gemma import gemma_component, read_gemma_config

    return read_gemma_config(root)[1], gemma_component(root), sanitize_gemma_key


def _text_phases(root: Path | None, itemsize: int | None, prompts: int) -> list[PhaseMemory]:
    if root is None:
        return []
    config, component, sanitize = _text_encoder(Path(root))
    weights, _ = _weight_bytes(component.tensors, itemsize, sanitize)
    size = itemsize or 2
    states = (config.num_hidden_layers + 1) * PROMPT_TOKENS * config.hidden_size * size
    layer = PROMPT_TOKENS * (3 * config.intermediate_size * size + config.num_attention_heads * PROMPT_TOKENS * 4)
    # the finished prompts' stacked states, the current prompt's list of states and its stacked copy
    activations = (prompts + 1) * states + layer
    return [PhaseMemory(TEXT_ENCODING, weights, int(activations), f"{prompts} prompt(s) x {PROMPT_TOKENS} tokens")]


def _connector_phase(ckpt: Checkpoint, root: Path | None, itemsize: int | None, prompts: int) -> PhaseMemory:
    from ltx_backend.models.text_connector import sanitize_processor_key
    from ltx_backend.weights.transformer import _text_component

    weights = 0
    if ckpt.has("connector") or ckpt.has("transformer") or ckpt.has("text_embedding_projection"):
        weights, _ = _weight_bytes(_text_component(ckpt).tensors, itemsize, sanitize_processor_key)
    states = 0
    if root is not None:
        config = _text_encoder(Path(root))[0]
        states = (config.num_hidden_layers + 1) * PROMPT_TOKENS * config.hidden_size * (itemsize or 2)
    return PhaseMemory(CONNECTORS, weights, 2 * prompts * states)


def _video_decoder(ckpt: Checkpoint, itemsize: int | None) -> tuple[int, int]:
    from ltx_backend.models.video_vae import sanitize_decoder_key

    component = _component(ckpt, "vae_decoder", "vae")
    return (0, 0) if component is None else _weight_bytes(component.tensors, itemsize, sanitize_decoder_key)


def _video_encoder(ckpt: Checkpoint, itemsize: int | None) -> tuple[int, int]:
    from ltx_backend.models.video_vae import sanitize_encoder_key

    component = _component(ckpt, "vae_encoder", "vae")
    return (0, 0) if component is None else _weight_bytes(component.tensors, itemsize, sanitize_encoder_key)


def largest_tile(tiling: TilingConfig | None, height: int, width: int, frames: int) -> tuple[int, int, int]:
    """(frames, height, width) in output pixels of the largest tile `decode_tiled` decodes at once (its batches of
    same-shape tiles stay within that many voxels)."""
    return tile_layout(*latent_cells(height, width, frames), tiling).largest


def _video_decode_phase(ckpt: Checkpoint, request: GenerationRequest, itemsize: int | None, scale: float):
    weights, params = _video_decoder(ckpt, itemsize)
    tiling = tiling_for(request.tiling, request.height, request.width, request.num_frames)
    t, h, w = largest_tile(tiling, request.height, request.width, request.num_frames)
    # the largest call's voxels, and the inputs a decode in time chunks keeps (`vae_tiling.decode_memory`)
    voxels = decode_memory(*latent_cells(request.height, request.width, request.num_frames), tiling)
    activations = scale * (VAE_BYTES_PER_PARAM * params + VAE_BYTES_PER_VOXEL * voxels)
    kind = "untiled" if tiling is None else f"tiling {request.tiling}"
    return PhaseMemory(VIDEO_DECODE, weights, int(activations), f"{kind}, largest tile {t}x{h}x{w}")


def auto_tiling(ckpt: Checkpoint, request: GenerationRequest, dtype: mx.Dtype | None, available: int) -> str:
    """The tiling ``--tiling auto`` decodes `request`'s video with in `available` bytes (0: unknown): see
    `auto_decode_tiling`. ``auto`` itself (generate_av's size rule) where the memory is unknown or that rule leaves
    the video untiled."""
    if available <= 0 or generate_av_tiling("auto", request.height, request.width, request.num_frames) is None:
        return "auto"
    itemsize = _itemsize(dtype)
    weights, params = _video_decoder(ckpt, itemsize)
    latent = latent_cells(request.height, request.width, request.num_frames)
    return auto_decode_tiling(weights, params, itemsize, latent, available)


def auto_decode_tiling(
    weights: int, params: int, itemsize: int | None, latent: tuple[int, int, int], available: int
) -> str:
    """Untiled where a decoder of `weights` bytes and `params` parameters decodes a latent of (frames, height,
    width) cells in at most ``UNTILED_SHARE`` of `available` bytes (0.19 s instead of 0.94 s for generate_av's tiles
    of 768x512x121 on an H100); else the tiling with the least decode work (`vae_tiling.least_work_tiling`) whose
    largest tile fits that share, as a ``px/overlap/frames/overlap`` spec (more memory never picks more work);
    ``aggressive``, the smallest tiles, when none does."""
    scale = _activation_scale(itemsize)
    # the phase's total (weights + scale * (per-parameter + per-voxel bytes)) within the share
    max_voxels = ((UNTILED_SHARE * available - weights) / scale - VAE_BYTES_PER_PARAM * params) / VAE_BYTES_PER_VOXEL
    if decode_work(*latent, None)[0] <= max_voxels:
        return "none"
    tiling = least_work_tiling(*latent, max_voxels)
    return "aggressive" if tiling is None else tiling.spec


def _audio_phase(ckpt: Checkpoint, request: GenerationRequest) -> PhaseMemory:
    from ltx_backend.models.audio_vae import sanitize_decoder_key

    weights = 0
    decoder = _component(ckpt, "audio_vae")
    if decoder is not None:
        weights += _weight_bytes(decoder.tensors, None, sanitize_decoder_key)[0]
    vocoder = _component(ckpt, "vocoder")
    if vocoder is not None:
        weights += _weight_bytes(vocoder.tensors, None)[0]
    seconds = request.num_frames / request.fps
    return PhaseMemory(AUDIO_DECODE, weights, int(AUDIO_BYTES_PER_SECOND * seconds), f"{seconds:.1f} s")


def _denoise_phase(
    ckpt: Checkpoint,
    request: GenerationRequest,
    itemsize: int | None,
    quantize: int | None,
    scale: float,
    streaming: bool = False,
    kept_blocks: int = 0,
) -> PhaseMemory:
    from ltx_backend.pipeline.sampler import audio_latent_frames
    from ltx_backend.weights.video import find_upscaler

    weights, _ = _transformer_weights(ckpt, itemsize, quantize, streaming, kept_blocks)
    q = ckpt.quantization
    params = _logical_params(_component(ckpt, "transformer"), q["bits"] if q else None)
    video_dim, audio_dim = _transformer_dims(ckpt)
    cells = (request.height // SPACE_SCALE) * (request.width // SPACE_SCALE)
    appending = request.mode == "interpolate"  # keyframe interpolation appends every keyframe, frame 0 too
    appended = sum(1 for keyframe in request.keyframes if appending or keyframe.frame_index != 0)
    video_tokens = (request.latent_frames + appended) * cells
    audio_tokens = audio_latent_frames(request.num_frames, request.fps) if request.audio else 0
    from ltx_backend.pipeline.engine import checkpoint_variant
    from ltx_backend.pipeline.request import SINGLE_STAGE

    # IC-LoRA reference tokens join stage 1, counted at downscale factor 1 (an upper bound): the full-size stage of
    # single-stage layouts; the half-size stage 1 of two-stage layouts, which outgrows stage 2 only with 4 or more.
    references = len(request.controls) * request.latent_frames * cells
    if request.layout in SINGLE_STAGE:
        video_tokens += references
    else:
        video_tokens = max(video_tokens, (video_tokens + references) // 4)

    passes = GUIDED_PASSES if request.layout in SINGLE_STAGE and checkpoint_variant(ckpt) == "dev" else 1
    stage2 = scale * (
        TRANSFORMER_BYTES_PER_PARAM * params
        + TRANSFORMER_BYTES_PER_TOKEN_CHANNEL * passes * (video_tokens * video_dim + audio_tokens * audio_dim)
    )
    # Between the stages the x2 upsampler sits beside the transformer (its own activations are a few MB).
    upsampler = 0
    try:
        source = find_upscaler(ckpt, "spatial_x2")
    except LtxError:
        source = None
    if source is not None:
        upsampler = _weight_bytes(source.component.tensors, itemsize)[0]
    activations = max(stage2, upsampler)
    which = "full size" + (f", {passes} guided passes" if passes > 1 else "")
    kept = f", {kept_blocks} kept" if kept_blocks else ""
    detail = f"{which}: {video_tokens} video + {audio_tokens} audio tokens" + (
        f", blocks streamed{kept}" if streaming else ""
    )
    return PhaseMemory(DENOISING, weights, int(activations), detail)


def _image_phase(ckpt: Checkpoint, request: GenerationRequest, itemsize: int | None, scale: float):
    weights, params = _video_encoder(ckpt, itemsize)
    activations = scale * (VAE_BYTES_PER_PARAM * params + VAE_BYTES_PER_VOXEL * request.height * request.width)
    return PhaseMemory(IMAGE_ENCODING, weights, int(activations), f"{len(request.keyframes)} keyframe(s)")


def _source_phase(ckpt: Checkpoint, request: GenerationRequest, itemsize: int | None, scale: float):
    """a2v: the audio encoder on the soundtrack; retake / extend: the video encoder on the whole source clip too."""
    from ltx_backend.models.audio_vae import sanitize_encoder_key

    weights, activations, detail = 0, 0.0, []
    if request.mode in ("retake", "extend"):
        frames = request.source_frames or request.num_frames
        encoder_weights, params = _video_encoder(ckpt, itemsize)
        weights += encoder_weights
        voxels = frames * request.height * request.width
        activations += scale * (VAE_BYTES_PER_PARAM * params + VAE_BYTES_PER_VOXEL * voxels)
        detail.append(f"{frames} source frames")
    audio = _component(ckpt, "audio_vae")
    if audio is not None:
        weights += _weight_bytes(audio.tensors, None, sanitize_encoder_key)[0]
        seconds = (request.source_frames or request.num_frames) / request.fps
        activations += AUDIO_BYTES_PER_SECOND * seconds
        detail.append(f"{seconds:.1f} s of sound")
    return PhaseMemory(SOURCE_ENCODING, weights, int(activations), ", ".join(detail))


def _phases(ckpt, root, request, dtype, quantize, streaming: bool = False, kept: int = 0) -> dict[str, PhaseMemory]:
    from ltx_backend.pipeline.engine import checkpoint_variant

    itemsize = _itemsize(dtype)
    scale = _activation_scale(itemsize)
    prompts = 2 if checkpoint_variant(ckpt) == "dev" else 1
    phases = [*_text_phases(root, itemsize, prompts), _connector_phase(ckpt, root, itemsize, prompts)]
    if request.keyframes:
        phases.append(_image_phase(ckpt, request, itemsize, scale))
    if request.mode in ("a2v", "retake", "extend"):
        phases.append(_source_phase(ckpt, request, itemsize, scale))
    phases.append(_denoise_phase(ckpt, request, itemsize, quantize, scale, streaming, kept))
    phases.append(_video_decode_phase(ckpt, request, itemsize, scale))
    if request.audio:  # after the video: it runs while ffmpeg encodes
        phases.append(_audio_phase(ckpt, request))
    return {phase.name: phase for phase in phases}


def estimate(
    checkpoint: Checkpoint,
    text_encoder_root: str | Path | None,
    request: GenerationRequest,
    dtype: mx.Dtype | None,
    quantize: int | None = None,
    streaming: bool = False,
    kept_blocks: int = 0,
) -> MemoryPlan:
    """The memory each phase of `request` needs with this checkpoint and text encoder (None: no text phase).

    `request` should be validated (sizes multiples of 64, frames 8k+1). `dtype` is the compute dtype the engine
    loads weights in (None: as stored); `quantize` the load-time transformer quantization (4, 8 or None);
    `streaming`: the transformer's blocks are read from disk per step (weights/streaming.py), but for
    `kept_blocks` of them, held once read.
    """
    phases = _phases(checkpoint, text_encoder_root, request, dtype, quantize, streaming, kept_blocks)
    itemsize = _itemsize(dtype)
    scale = _activation_scale(itemsize)
    # What-ifs for the hint, mildest first. Quantizing at load only applies to unquantized checkpoints.
    transformer = _component(checkpoint, "transformer")
    can_quantize = transformer is not None and not transformer.quantized_paths and not streaming
    bits = [b for b in (8, 4) if can_quantize and (quantize is None or b < quantize)]
    tilings = [None] if request.tiling == "aggressive" else [None, "aggressive"]
    options: dict[str, int] = {}
    option_phases: dict[str, dict[str, int]] = {}
    for b in [None, *bits]:
        for tiling in tilings:
            if b is None and tiling is None:
                continue
            changed = dict(phases)
            if b is not None:
                changed[DENOISING] = _denoise_phase(checkpoint, request, itemsize, b, scale, streaming, kept_blocks)
            if tiling is not None:
                tiled = replace(request, tiling=tiling)
                changed[VIDEO_DECODE] = _video_decode_phase(checkpoint, tiled, itemsize, scale)
            flags = " ".join(([f"--quantize {b}"] if b else []) + ([f"--tiling {tiling}"] if tiling else []))
            options[flags] = max(p.total for p in changed.values())
            option_phases[flags] = {name: p.total for name, p in changed.items()}
    return MemoryPlan(phases, options, option_phases)


# --- what the device has -----------------------------------------------------------------------------------------


def _limit_override() -> int | None:
    raw = os.environ.get(ENV_LIMIT, "").strip()
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0 or math.isinf(value):
        raise LtxError(
            ErrorCode.INVALID_PARAMS,
            f"{ENV_LIMIT}={raw!r} is not a positive number of gigabytes",
            f"Set {ENV_LIMIT} to the memory this job may use, e.g. 40, or unset it.",
        )
    return int(value * GB)


def _device_info() -> dict:
    for getter in (getattr(mx, "device_info", None), getattr(getattr(mx, "metal", None), "device_info", None)):
        if getter is None:
            continue
        try:
            info = getter()
        except Exception:  # an older MLX or a backend without the query
            continue
        if isinstance(info, dict):
            return info
    return {}


def _system_available() -> int:
    try:
        import psutil  # type: ignore[import-not-found]

        return int(psutil.virtual_memory().available)
    except Exception:
        pass
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    for pages in ("SC_AVPHYS_PAGES", "SC_PHYS_PAGES"):
        try:
            return int(os.sysconf(pages) * os.sysconf("SC_PAGE_SIZE"))
        except (ValueError, OSError, AttributeError):
            continue
    return 0


def _measured_memory() -> tuple[int, bool]:
    """(bytes, whether they are free memory now) from the device or the system; (0, False) when unknown.

    Free memory (CUDA's, the system's available RAM) leaves out what this process holds; a fixed budget (Metal's
    recommended working set, a device's total) already covers it."""
    if mx.default_device().type == mx.DeviceType.gpu:
        info = _device_info()
        for key, free in (("free_memory", True), ("max_recommended_working_set_size", False),
                          ("total_memory", False), ("memory_size", False)):  # fmt: skip
            value = info.get(key)
            if isinstance(value, int) and value > 0:
                return value, free
    value = _system_available()
    return value, value > 0


def available_memory() -> int:
    """Bytes this job may use: ``LTX_BACKEND_MEMORY_LIMIT_GB`` if set; on a GPU what MLX reports (free memory on
    CUDA, the recommended working set on Metal, else the device's total); otherwise the system's available RAM.
    0 when it cannot be told."""
    override = _limit_override()
    return override if override is not None else _measured_memory()[0]


# --- the verdict -------------------------------------------------------------------------------------------------


def _gb(value: float) -> str:
    return f"{value / GB:.1f} GB" if value >= 10 * GB else f"{value / GB:.2f} GB"


def check(plan: MemoryPlan, available: int) -> None:
    """Raise ``insufficient_memory`` when the plan's peak exceeds `available` bytes (0: unknown, never raises)."""
    if available <= 0 or plan.peak <= available:
        return
    over = [p for p in plan.phases.values() if p.total > available]
    first = max(over, key=lambda p: p.total)
    message = (
        f"Not enough memory for {first.label}: it needs {_gb(first.total)} ({_gb(first.weights)} weights + "
        f"{_gb(first.activations)} working memory{'; ' + first.detail if first.detail else ''}) and "
        f"{_gb(available)} is available"
    )
    others = [p for p in over if p is not first]
    if others:
        message += "; also too large: " + ", ".join(f"{p.label} {_gb(p.total)}" for p in others)
    raise LtxError(
        ErrorCode.INSUFFICIENT_MEMORY,
        message + ".",
        _hint(plan, available, over),
        peak_gb=round(plan.peak / GB, 2),
        available_gb=round(available / GB, 2),
        phases={name: round(p.total / GB, 2) for name, p in plan.phases.items()},
    )


def _hint(plan: MemoryPlan, available: int, over: list[PhaseMemory]) -> str:
    names = {p.name for p in over}
    for flags, peak in plan.options.items():  # mildest first
        if peak <= available and _relevant(flags, names):
            after = ", ".join(
                f"{PHASE_LABELS.get(name, name)} {_gb(total)}"
                for name, total in plan.option_phases.get(flags, {}).items()
                if name in names
            )
            return f"Use {flags} ({after}; peak {_gb(peak)})."
    hints = []
    for phase in over:
        if phase.weights > available:
            what = {
                TEXT_ENCODING: "use a 4-bit text encoder (--text-encoder mlx-community/gemma-3-12b-it-4bit)",
                DENOISING: "use a 4-bit quantized checkpoint"
                + (
                    f" or --quantize 4 (the job then needs {_gb(plan.options['--quantize 4'])})"
                    if "--quantize 4" in plan.options
                    else ""
                ),
            }.get(phase.name, "use a machine with more memory")
            hints.append(f"the {phase.label} weights alone take {_gb(phase.weights)}: {what}")
    if not hints:  # working memory is what does not fit: it shrinks with the video
        best = _best_flags(plan)
        hints.append("Use a smaller size or fewer frames" + (f", with {best}" if best else ""))
    if ENV_LIMIT in os.environ:
        hints.append(f"{ENV_LIMIT} is set to {_gb(available)}")
    text = "; ".join(hints)
    return text[0].upper() + text[1:] + "."


def _best_flags(plan: MemoryPlan) -> str:
    """The option that lowers the peak most (usually --quantize 4 --tiling aggressive), or "" if none lowers it."""
    if not plan.options:
        return ""
    best = min(plan.options, key=plan.options.__getitem__)
    return best if plan.options[best] < plan.peak else ""


def _relevant(flags: str, failing: set[str]) -> bool:
    """Whether an option changes a failing phase (it only changes denoising and video decode)."""
    return ("quantize" in flags and DENOISING in failing) or ("tiling" in flags and VIDEO_DECODE in failing)


# --- the planner's choice ----------------------------------------------------------------------------------------

# A mixed-precision pack of LTX-2.3 whose transformer is about 12 GB (weights/mixed_quant.py): what a job needs when
# even a 4-bit transformer, streamed, leaves too little room.
LOW_RAM_PACK = "baa-ai/LTX-2.3-22B-RAM-12GB-MLX"
SMALLER_TEXT_ENCODER = "mlx-community/gemma-3-12b-it-4bit"


@dataclass(frozen=True)
class MemoryChoice:
    """What the planner chose for one job (resident or streamed transformer, the decode's tiling) and why."""

    streaming: bool
    tiling: str
    plan: MemoryPlan
    available: int
    reasons: tuple[str, ...]
    suggestions: tuple[str, ...] = ()
    kept_blocks: int = 0  # streamed blocks read once and held, as the memory allows

    def event(self) -> events.MemoryPlan:
        return events.MemoryPlan(
            transformer="streaming" if self.streaming else "resident",
            tiling=self.tiling,
            peak_gb=round(self.plan.peak / GB, 2),
            available_gb=round(self.available / GB, 2),
            reasons=list(self.reasons),
            suggestions=list(self.suggestions),
        )


def choose(
    checkpoint: Checkpoint,
    text_encoder_root: str | Path | None,
    request: GenerationRequest,
    dtype: mx.Dtype | None,
    quantize: int | None,
    available: int,
    per_rank: Callable[[MemoryPlan], MemoryPlan] | None = None,
) -> MemoryChoice:
    """Pick the cheapest way the job fits in `available` bytes (0: unknown, everything fits), or refuse.

    `per_rank` turns a plan into one rank's share when the job runs over several (``parallel/``).

    In the order that costs least time: everything resident; then the transformer's blocks streamed from disk
    (denoising holds a few blocks instead of all; costs the reads, overlapped with compute); then the video decode
    tiled with the least work that fits (``auto_tiling``; only when the request left tiling on ``auto``). A text
    encoder too large for the memory cannot be swapped here (another download): the refusal names the smaller one.
    ``memory: "low"`` streams whatever the memory. Refuses with ``insufficient_memory`` only when the lowest mode
    cannot fit, naming what would: a smaller text encoder, the 12 GB mixed-precision pack, or the frame count that
    fits.
    """

    def _estimate(*args) -> MemoryPlan:
        plan = estimate(*args)
        return per_rank(plan) if per_rank is not None else plan

    streaming, kept_blocks = request.memory == "low", 0  # low: the least memory, every block streamed
    reasons: list[str] = ["memory: low (--low-ram) streams the transformer's blocks"] if streaming else []
    plan = _estimate(checkpoint, text_encoder_root, request, dtype, quantize, streaming)
    tiling = request.tiling
    if available > 0 and not streaming and plan.phases[DENOISING].total > available:
        resident = plan.phases[DENOISING].total
        streaming = True
        plan = _estimate(checkpoint, text_encoder_root, request, dtype, quantize, streaming)
        blocks, largest = _streamed_blocks(checkpoint, _itemsize(dtype))
        kept_blocks = _blocks_to_keep(blocks, largest, available - plan.phases[DENOISING].total)
        if kept_blocks:
            plan = _estimate(checkpoint, text_encoder_root, request, dtype, quantize, streaming, kept_blocks)
        kept = f", {kept_blocks} of its {blocks} blocks held once read" if kept_blocks else ""
        reasons.append(
            f"denoising with the whole transformer resident needs {_gb(resident)} and {_gb(available)} is "
            f"available: its blocks are streamed from disk{kept} ({_gb(plan.phases[DENOISING].total)})"
        )
    if available > 0 and request.tiling == "auto" and plan.phases[VIDEO_DECODE].total > available:
        untiled = plan.phases[VIDEO_DECODE].total
        tiling = auto_tiling(checkpoint, request, dtype, available)
        tiled = replace(request, tiling=tiling)
        plan = _estimate(checkpoint, text_encoder_root, tiled, dtype, quantize, streaming, kept_blocks)
        reasons.append(
            f"the video decode needs {_gb(untiled)} with tiling auto: tiling {tiling} "
            f"({_gb(plan.phases[VIDEO_DECODE].total)})"
        )
    if not reasons:
        reasons.append(
            f"everything fits resident (peak {_gb(plan.peak)}"
            + (f" of {_gb(available)} available)" if available > 0 else "; available memory unknown)")
        )
    suggestions = _suggestions(checkpoint, text_encoder_root, request, dtype, quantize, plan, available, tiling)
    choice = MemoryChoice(streaming, tiling, plan, available, tuple(reasons), tuple(suggestions), kept_blocks)
    if available > 0 and plan.peak > available:
        _refuse(choice)
    return choice


def _blocks_to_keep(blocks: int, largest: int, spare: int) -> int:
    """How many of `blocks` streamed blocks (the `largest` of them in bytes) to hold once read in `spare` bytes of
    denoising memory (``KEPT_SHARE`` of it): all but one at most (all of them would be the resident transformer,
    which did not fit)."""
    if spare <= 0 or not largest:
        return 0
    return max(0, min(blocks - 1, int(spare * KEPT_SHARE) // largest))


def _suggestions(checkpoint, root, request, dtype, quantize, plan: MemoryPlan, available: int, tiling: str):
    """What would make the chosen plan fit (or fit better), for the refusal and the event."""
    if available <= 0 or plan.peak <= available:
        return []
    over = {name for name, phase in plan.phases.items() if phase.total > available}
    found = []
    if TEXT_ENCODING in over:
        found.append(f"a smaller text encoder (--text-encoder {SMALLER_TEXT_ENCODER}, or a Gemma 3 4B)")
    if DENOISING in over:
        transformer = _component(checkpoint, "transformer")
        if transformer is not None and plan.phases[DENOISING].weights > available / 2:
            found.append(f"a smaller transformer pack (a 4-bit or mixed-precision one such as {LOW_RAM_PACK})")
    if over & {DENOISING, VIDEO_DECODE}:
        frames = _frames_that_fit(checkpoint, root, replace(request, tiling=tiling), dtype, quantize, available)
        if frames:
            found.append(f"fewer frames (--num-frames {frames} fits at {request.width}x{request.height})")
        elif request.num_frames > 9 or request.width * request.height > 256 * 256:
            found.append("a smaller size")
    return found


def _frames_that_fit(checkpoint, root, request: GenerationRequest, dtype, quantize, available: int) -> int | None:
    """The largest 8k+1 frame count below the request's whose streamed plan fits, or None."""
    for frames in range(request.num_frames - 8, 8, -8):
        plan = estimate(checkpoint, root, replace(request, num_frames=frames), dtype, quantize, streaming=True)
        if plan.peak <= available:
            return frames
    return None


def _refuse(choice: MemoryChoice) -> None:
    plan, available = choice.plan, choice.available
    over = sorted((p for p in plan.phases.values() if p.total > available), key=lambda p: -p.total)
    first = over[0]
    mode = "with the transformer's blocks streamed" if choice.streaming else "with every model resident"
    message = (
        f"Not enough memory even {mode} and tiling {choice.tiling}: {first.label} needs {_gb(first.total)} "
        f"({_gb(first.weights)} weights + {_gb(first.activations)} working memory"
        f"{'; ' + first.detail if first.detail else ''}) and {_gb(available)} is available"
    )
    if len(over) > 1:
        message += "; also too large: " + ", ".join(f"{p.label} {_gb(p.total)}" for p in over[1:])
    hint = "Use " + " or ".join(choice.suggestions) if choice.suggestions else "Use a machine with more memory"
    if ENV_LIMIT in os.environ:
        hint += f"; {ENV_LIMIT} is set to {_gb(available)}"
    raise LtxError(
        ErrorCode.INSUFFICIENT_MEMORY,
        message + ".",
        hint + ".",
        peak_gb=round(plan.peak / GB, 2),
        available_gb=round(available / GB, 2),
        phases={name: round(p.total / GB, 2) for name, p in plan.phases.items()},
        streaming=choice.streaming,
        tiling=choice.tiling,
    )


# --- residency: what a session keeps loaded between jobs ----------------------------------------------------------

# The components each phase uses (pipeline/resident.py names them). The x2 upsample reads the video decoder's
# per-channel statistics, so denoising borrows the decoder too (previews decode with it as well).
PHASE_COMPONENTS = {
    TEXT_ENCODING: ("text_encoder",),
    CONNECTORS: ("text_processor",),
    IMAGE_ENCODING: ("video_encoder",),
    SOURCE_ENCODING: ("video_encoder", "audio_encoder"),  # a2v borrows the audio encoder only (a superset is safe)
    DENOISING: ("transformer", "upsampler", "video_decoder"),
    AUDIO_DECODE: ("audio_decoder", "vocoder"),
    VIDEO_DECODE: ("video_decoder",),
}
# The components whose weights a phase's estimate counts (the upsampler and the decoder's statistics sit in the
# denoising phase's working memory).
PHASE_WEIGHTS = {**PHASE_COMPONENTS, DENOISING: ("transformer",)}
# Given up first when not everything fits: the text encoder (the prompt cache skips it for repeated prompts and
# it is the largest after the transformer), then the rest largest first (each frees the most memory).
FIRST_TO_FREE = ("text_encoder",)


def component_bytes(
    ckpt: Checkpoint, text_encoder_root: str | Path | None, dtype: mx.Dtype | None, quantize: int | None = None
) -> dict[str, int]:
    """Loaded bytes of every component a session may hold, from the headers (as the phase estimates count them)."""
    from ltx_backend.models.audio_vae import sanitize_decoder_key as audio_key
    from ltx_backend.models.audio_vae import sanitize_encoder_key as audio_encoder_key
    from ltx_backend.models.text_connector import sanitize_processor_key
    from ltx_backend.weights.transformer import _text_component
    from ltx_backend.weights.video import find_upscaler

    itemsize = _itemsize(dtype)
    sizes = {"transformer": _transformer_weights(ckpt, itemsize, quantize)[0]}
    if text_encoder_root is not None:  # Gemma 3, or LTX-2.5's Gemma 4
        _, component, sanitize = _text_encoder(Path(text_encoder_root))
        sizes["text_encoder"] = _weight_bytes(component.tensors, itemsize, sanitize)[0]
    if ckpt.has("connector") or ckpt.has("transformer") or ckpt.has("text_embedding_projection"):
        sizes["text_processor"] = _weight_bytes(_text_component(ckpt).tensors, itemsize, sanitize_processor_key)[0]
    sizes["video_decoder"] = _video_decoder(ckpt, itemsize)[0]
    sizes["video_encoder"] = _video_encoder(ckpt, itemsize)[0]
    try:
        source = find_upscaler(ckpt, "spatial_x2")
    except LtxError:
        source = None
    if source is not None:
        sizes["upsampler"] = _weight_bytes(source.component.tensors, itemsize)[0]
    decoder, vocoder = _component(ckpt, "audio_vae"), _component(ckpt, "vocoder")
    if decoder is not None:
        sizes["audio_decoder"] = _weight_bytes(decoder.tensors, None, audio_key)[0]
        sizes["audio_encoder"] = _weight_bytes(decoder.tensors, None, audio_encoder_key)[0]
    if vocoder is not None:
        sizes["vocoder"] = _weight_bytes(vocoder.tensors, None)[0]
    return sizes


def residency_peak(plan: MemoryPlan, sizes: dict[str, int], keep: set[str]) -> int:
    """The job's peak when `keep` stays loaded throughout: the kept weights plus, for each phase, its own needs
    less the kept components it uses (they are already counted)."""
    resident = sum(sizes.get(name, 0) for name in keep)
    peaks = [
        resident + phase.total - sum(sizes.get(c, 0) for c in set(PHASE_WEIGHTS.get(name, ())) & keep)
        for name, phase in plan.phases.items()
    ]
    return max(peaks, default=resident)


def plan_residency(plan: MemoryPlan, sizes: dict[str, int], budget: int, used: set[str]) -> set[str]:
    """Which of the components this job `used` may stay loaded within `budget` bytes (0: unknown, keep all).

    Starts from all of them and gives them up one at a time (`FIRST_TO_FREE`, then the largest) until the peak
    with the rest resident fits; with nothing kept the peak is the plan's own (today's phase-by-phase)."""
    keep = set(used)
    if budget <= 0:
        return keep
    order = [n for n in FIRST_TO_FREE if n in keep] + sorted(keep - set(FIRST_TO_FREE), key=lambda n: -sizes.get(n, 0))
    for name in order:
        if residency_peak(plan, sizes, keep) <= budget:
            break
        keep.discard(name)
    return keep


def used_components(plan: MemoryPlan) -> set[str]:
    """The components the phases of `plan` borrow."""
    return {c for name in plan.phases for c in PHASE_COMPONENTS.get(name, ())}


def session_budget(resident_bytes: int) -> int:
    """Bytes a session may hold at a job's peak: ``LTX_BACKEND_MEMORY_LIMIT_GB`` if set (the whole session's
    limit); else the fixed budget where the measure is one (Metal's recommended working set covers everything the
    process holds, so adding the resident models would count them twice), at most MLX's memory limit; else, where
    the measure is free memory:

    * what MLX could hold: free memory plus what it holds now (arrays and its cache of freed buffers, which it
      reuses or releases before it allocates more: free memory leaves both out),
    * at most MLX's memory limit (on CUDA `fit_mlx_limit` sets it to what MLX can hold, less a margin: a plan of
      free + held memory alone ran out of memory on an H100, where 10-15 GB are held outside MLX's counts),
    * less the arrays MLX holds that are not the resident models (a finished job's leftovers): the plan cannot
      count on them."""
    override = _limit_override()
    if override is not None:
        return override
    measured, free = _measured_memory()
    if measured <= 0:
        return 0
    held = mx.get_active_memory() if free else 0
    usable = _mlx_could_hold(measured) if free else measured
    limit = mx.get_memory_limit()  # lowered where the device refused an allocation (`lower_limit_to_what_fit`)
    if limit > 0:
        usable = min(usable, limit)
    return max(0, usable - max(0, held - resident_bytes))


def _mlx_could_hold(free: int) -> int:
    """What MLX could hold with `free` bytes free on the device: those, plus its arrays and its cache of freed
    buffers (which it reuses or releases before it allocates more; free memory leaves both out)."""
    return free + mx.get_active_memory() + mx.get_cache_memory()


def is_out_of_memory(error: BaseException) -> bool:
    """Whether `error` is the device refusing an allocation (MLX raises CUDA's as a RuntimeError)."""
    return isinstance(error, RuntimeError) and "out of memory" in str(error).lower()


# Of a GPU's memory, kept free beyond what MLX may hold: what grows outside MLX's counts during a job (library
# workspaces, newly loaded kernels). Measured on an H100 (85.5 GB): 10-15 GB held outside MLX after a job, varying.
DEVICE_MARGIN = 0.05
_mlx_default_limit = 0  # MLX's own memory limit, before `fit_mlx_limit` first lowered it
_refused_at = 0  # what MLX held when the device last refused an allocation (0: never)


def fit_mlx_limit() -> int:
    """On a GPU measured by free memory (CUDA), set MLX's memory limit to what MLX can really hold now: free memory
    plus MLX's arrays and cache, less `DEVICE_MARGIN` of the device, and never above MLX's default or what held
    when the device refused an allocation. MLX releases its cache of freed buffers at that limit; its default
    (94% of the device on CUDA) ignores the memory held outside MLX, so on an H100 its cache grew beside 49 GB of
    resident models until the device refused the video decode's allocation. Returns the limit (0: not set)."""
    global _mlx_default_limit
    measured, free = _measured_memory()
    if not free or measured <= 0 or mx.default_device().type != mx.DeviceType.gpu:
        return 0
    _mlx_default_limit = _mlx_default_limit or mx.get_memory_limit()
    capacity = _mlx_could_hold(measured)
    total = _device_info().get("total_memory")
    capacity -= int(DEVICE_MARGIN * total) if isinstance(total, int) else 0
    limit = min(value for value in (_mlx_default_limit, capacity, _refused_at) if value > 0)
    mx.set_memory_limit(limit)
    return limit


def lower_limit_to_what_fit() -> int:
    """After the device refused an allocation: lower MLX's memory limit to what it held then (arrays and cache),
    so that MLX releases its cache before that point and every later plan (`session_budget`) stays below it.
    Returns the new limit in bytes."""
    global _refused_at
    held = mx.get_active_memory() + mx.get_cache_memory()
    limit = mx.get_memory_limit()
    if held > 0 and (limit <= 0 or held < limit):
        _refused_at = held
        mx.set_memory_limit(held)
        limit = held
    return limit


def memory_report(resident_bytes: int) -> str:
    """The numbers behind `session_budget`, for the log (they explain a plan that a device later refused)."""
    measured, free = _measured_memory()
    parts = [
        f"{'free' if free else 'budget'} {_gb(measured)}",
        f"MLX active {_gb(mx.get_active_memory())}",
        f"cache {_gb(mx.get_cache_memory())}",
        f"limit {_gb(mx.get_memory_limit())}",
        f"resident models {_gb(resident_bytes)}",
    ]
    return ", ".join(parts)


# --- per rank (--distributed N) ------------------------------------------------------------------------------------
# Tensor parallelism splits the blocks' attention and feed-forward weights over the ranks and replicates the rest
# (ltx_backend/parallel/tensor.py). Of the activations, the per-head and hidden-unit temporaries split while the
# residual stream and the modulation values stay whole on every rank: half of them splitting is an estimate, not a
# measurement (benchmarks/distributed.py reports the per-GPU peaks to calibrate it). Guidance parallelism keeps the
# whole model on every rank. The other phases (text encoding, decoding) run whole on a rank.
TP_SPLIT_ACTIVATIONS = 0.5


def _tensor_parallel_share(ckpt: Checkpoint) -> float:
    """The fraction of the transformer's stored bytes that tensor parallelism splits (LTX-2.3 22B: about 95%; the tiny
    test model, with its relatively large embedders: about 40%)."""
    from ltx_backend.models.transformer import sanitize_transformer_key

    component = _component(ckpt, "transformer")
    if component is None:
        return 0.0
    total = split = 0
    for key, info in component.tensors.items():
        if sanitize_transformer_key(key) is None:  # the text connectors, stored beside the transformer
            continue
        size = _tensor_bytes(info, None)
        total += size
        block = "transformer_blocks." in key
        if block and ("attn" in key or ".ff." in key) and "norm" not in key:
            split += size
    return split / total if total else 0.0


def per_rank(plan: MemoryPlan, checkpoint: Checkpoint, ranks: int, mode: str) -> MemoryPlan:
    """`plan` as one rank of `ranks` sees it (`mode`: ``tensor`` or ``guidance``): what each GPU must hold."""
    if ranks <= 1 or mode != "tensor":
        return plan
    share = _tensor_parallel_share(checkpoint)
    denoise = plan.phases[DENOISING]
    weights = int(denoise.weights * (1 - share + share / ranks))
    activations = int(denoise.activations * (1 - TP_SPLIT_ACTIVATIONS + TP_SPLIT_ACTIVATIONS / ranks))
    detail = f"{denoise.detail}; per rank of {ranks}".lstrip("; ")
    phases = {**plan.phases, DENOISING: replace(denoise, weights=weights, activations=activations, detail=detail)}
    return MemoryPlan(phases)
