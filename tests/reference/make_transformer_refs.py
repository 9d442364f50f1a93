"""Generate tiny transformer + text-connector reference fixtures from Lightricks' ltx-core (PyTorch).

For two model versions -- ``t20`` (LTX-2.0 style: split RoPE in float64, caption projection inside the transformer,
feature extractor V1) and ``t23`` (LTX-2.3 style: gated attention, cross-attention AdaLN, caption projection before
the connectors, gated connectors, feature extractor V2) -- this script builds tiny, seeded, random-weight modules with
ltx-core's own configurators (``LTXModelConfigurator``, ``EmbeddingsProcessorConfigurator``), rounds their weights to
bfloat16 (the files store bf16, as real checkpoints do), runs them in float32 on seeded inputs and writes into
``tests/fixtures/transformer/``:

* ``refs.npz``: inputs, intermediates and reference outputs (float32; masks and shapes int32), keys
  ``inputs.<name>`` (shared by both versions) and ``<version>.<group>.<name>``.
* ``<version>_official/``: Lightricks' single-file checkpoint naming (``model.diffusion_model.*`` for the transformer
  and both connectors, ``text_embedding_projection.*``), config in the metadata.
* ``t20_unified/``: mlx-video-with-audio's single-file layout (``model.safetensors`` + ``config.json`` +
  ``embedded_config.json``).
* ``t23_split/``: the MLX split layout (``transformer.safetensors``, ``connector.safetensors``, ``split_model.json``
  + the two json files above).

ltx-core sizes its feature extractor from a fixed Gemma-3-12B config (3840 wide, 49 hidden states), not from the
checkpoint config; the script swaps that config for a tiny one (``tiny_gemma``) while it builds or reloads the
embeddings processor. Everything is deterministic; re-running overwrites the fixtures with byte-identical files.
The audio<->video cross-attention AdaLN follows ltx-core 1.2.0's timestep rule (``ltx_core_1_2_rule``, patched into
1.0.0 and checked against ltx-core 1.2.0's fixture b first). Run from the repository root with the reference venv
(PyTorch CPU + ltx-core):

    /tmp/ltx-ref-venv/bin/python tests/reference/make_transformer_refs.py
"""

from __future__ import annotations

import contextlib
import copy
import functools
import importlib
import importlib.util
import json
import re
import sys
import types
from dataclasses import replace
from pathlib import Path

import fixture_io  # this folder's shared fixture writers (the script's folder is on sys.path)
import ltx_core_1_2_rule  # ltx-core 1.2.0's A<->V AdaLN timestep rule on 1.0.0
import numpy as np
import torch
from ltx_core.conditioning.types.latent_cond import VideoConditionByLatentIndex
from ltx_core.loader.single_gpu_model_builder import SingleGPUModelBuilder
from ltx_core.model.transformer.modality import Modality
from ltx_core.model.transformer.model import LTXModel
from ltx_core.model.transformer.model_configurator import LTXV_MODEL_COMFY_RENAMING_MAP, LTXModelConfigurator
from ltx_core.model.transformer.rope import generate_freq_grid_np, generate_freq_grid_pytorch, precompute_freqs_cis
from ltx_core.text_encoders.gemma.config import Gemma3ConfigData, Gemma3TextConfig
from ltx_core.text_encoders.gemma.embeddings_connector import Embeddings1DConnector
from ltx_core.text_encoders.gemma.embeddings_processor import EmbeddingsProcessor, convert_to_additive_mask
from ltx_core.text_encoders.gemma.encoders import encoder_configurator
from ltx_core.text_encoders.gemma.encoders.encoder_configurator import (
    EMBEDDINGS_PROCESSOR_KEY_OPS,
    EmbeddingsProcessorConfigurator,
)
from ltx_core.tools import AudioLatentTools, VideoLatentTools
from ltx_core.types import AudioLatentShape, VideoLatentShape
from safetensors.torch import load_file
from torch import nn

REPO = Path(__file__).resolve().parents[2]
OUT_DIR = REPO / "tests" / "fixtures" / "transformer"
MANIFEST_DIR = REPO.parent / "shared" / "reference" / "manifests"  # optional: key-name cross-check only
VERSIONS = {"t20": "2.0.0", "t23": "2.3.0"}
WEIGHT_SEEDS = {"t20": 20, "t23": 23}  # torch.manual_seed for default inits; generators for the randomisation
INPUT_SEED = 2024
STORAGE_DTYPE = torch.bfloat16  # what the checkpoint files hold; references are computed in float32 from it
# The shared fixture writers, bound to this script's output folder and storage dtype.
save_safetensors = functools.partial(fixture_io.save_safetensors, dtype=STORAGE_DTYPE, root=OUT_DIR)
write_json = fixture_io.write_json
save_npz = fixture_io.save_npz
fresh_dir = functools.partial(fixture_io.fresh_dir, OUT_DIR)


def _import_pipeline_components() -> type:
    """``ltx_pipelines.utils.types.PipelineComponents`` without running ``ltx_pipelines/__init__.py``.

    The package ``__init__`` imports every pipeline and, through them, PyAV / PIL / torchaudio (absent from the
    reference venv). Registering the two packages as bare namespace modules lets the two small submodules we need
    (``utils.constants``, ``utils.types``) import normally.
    """
    spec = importlib.util.find_spec("ltx_pipelines")
    root = Path(spec.origin).parent
    for name, path in (("ltx_pipelines", root), ("ltx_pipelines.utils", root / "utils")):
        if name not in sys.modules:
            package = types.ModuleType(name)
            package.__path__ = [str(path)]
            sys.modules[name] = package
    return importlib.import_module("ltx_pipelines.utils.types").PipelineComponents


PipelineComponents = _import_pipeline_components()

# ---------------------------------------------------------------------------
# Sizes. Tiny and deliberately NOT the real ratios: video 2 heads x 20 (width 40; the real 32 x 128 = 4096), audio
# 3 heads x 8 (width 24; real 32 x 64 = 2048): audio/video width 0.6 instead of 0.5, and different head counts.
# RoPE constraints (ltx-core, rope_type "split"): width/2 must split evenly over the heads; the video width is not a
# multiple of 6, so -- as for the real 4096 -- the 3-axis frequency table is padded (40//6 = 6 frequencies per axis,
# 18 < 20: 2 pad entries); the audio<->video cross-attention RoPE (width audio_cross_attention_dim = 24, time axis
# only) is split over the *query modality's* head count (2 for video, 3 for audio): 12 must divide by both.
# ---------------------------------------------------------------------------

VIDEO_HEADS, VIDEO_HEAD_DIM = 2, 20
AUDIO_HEADS, AUDIO_HEAD_DIM = 3, 8
VIDEO_CHANNELS = 16  # video latent channels = transformer in/out channels (patch size 1); real 128
AUDIO_LATENT_CHANNELS, AUDIO_MEL_BINS = 2, 4  # audio in/out channels = 2 * 4 = 8; real 8 * 16 = 128
GEMMA_HIDDEN, GEMMA_LAYERS = 20, 3  # -> 4 hidden states (embeddings + 3 layers) of width 20; real 3840, 49
TEXT_TOKENS, TEXT_PADDING = 128, 90  # ltx-core's connectors always use 128 learnable registers: T % 128 == 0
VIDEO_LATENT_SHAPE = VideoLatentShape(batch=1, channels=VIDEO_CHANNELS, frames=3, height=2, width=3)  # 18 tokens
AUDIO_LATENT_SHAPE = AudioLatentShape(batch=1, channels=AUDIO_LATENT_CHANNELS, frames=7, mel_bins=AUDIO_MEL_BINS)
FPS = 25.0
SIGMA = 0.7
CROSS_SIGMA_AUDIO = 0.4  # the "xsigma" run: audio at another sigma than video (tells the cross-modal timesteps apart)

# ---------------------------------------------------------------------------
# Configs: the real LTX-2.0 / LTX-2.3 "transformer" sections (ltx-2-19b / ltx-2.3-22b checkpoint metadata, as in
# shared/reference/manifests/*-official.json "config_used"), with only the sizes shrunk.
# ---------------------------------------------------------------------------

REAL_CONFIG_20 = {
    "num_attention_heads": 32,
    "attention_head_dim": 128,
    "in_channels": 128,
    "out_channels": 128,
    "num_layers": 48,
    "cross_attention_dim": 4096,
    "caption_channels": 3840,
    "norm_eps": 1e-06,
    "audio_num_attention_heads": 32,
    "audio_attention_head_dim": 64,
    "audio_in_channels": 128,
    "audio_out_channels": 128,
    "audio_cross_attention_dim": 2048,
    "positional_embedding_theta": 10000.0,
    "positional_embedding_max_pos": [20, 2048, 2048],
    "audio_positional_embedding_max_pos": [20],
    "timestep_scale_multiplier": 1000,
    "av_ca_timestep_scale_multiplier": 1000.0,
    "rope_type": "split",
    "frequencies_precision": "float64",
    "use_middle_indices_grid": True,
    "connector_num_attention_heads": 30,
    "connector_attention_head_dim": 128,
    "connector_num_layers": 2,
    "connector_num_learnable_registers": 128,
    "dropout": 0.0,
    "attention_bias": True,
    "num_vector_embeds": None,
    "activation_fn": "gelu-approximate",
    "num_embeds_ada_norm": 1000,
    "use_linear_projection": False,
    "only_cross_attention": False,
    "cross_attention_norm": True,
    "double_self_attention": False,
    "upcast_attention": False,
    "standardization_norm": "rms_norm",
    "norm_elementwise_affine": False,
    "qk_norm": "rms_norm",
    "positional_embedding_type": "rope",
    "use_audio_video_cross_attention": True,
    "share_ff": False,
    "av_cross_ada_norm": True,
}
REAL_CONFIG_23 = {
    **REAL_CONFIG_20,
    "connector_num_attention_heads": 32,
    "connector_attention_head_dim": 128,
    "connector_num_layers": 8,
    "apply_gated_attention": True,
    "cross_attention_adaln": True,
    "caption_proj_before_connector": True,
    "caption_projection_first_linear": False,
    "caption_projection_second_linear": False,
    "caption_proj_input_norm": False,
    "text_encoder_norm_type": "per_token_rms",
    "use_embeddings_connector": True,
    "connector_norm_output": True,
    "connector_apply_gated_attention": True,
    "audio_connector_num_attention_heads": 32,
    "audio_connector_attention_head_dim": 64,
    "connector_positional_embedding_max_pos": [4096],
}
SHRINK = {
    "num_attention_heads": VIDEO_HEADS,
    "attention_head_dim": VIDEO_HEAD_DIM,
    "in_channels": VIDEO_CHANNELS,
    "out_channels": VIDEO_CHANNELS,
    "num_layers": 2,
    "cross_attention_dim": VIDEO_HEADS * VIDEO_HEAD_DIM,  # text context width seen by attn2 = video width
    "caption_channels": GEMMA_HIDDEN,  # connector width (LTX-2.0: the Gemma width); unused by LTX-2.3
    "audio_num_attention_heads": AUDIO_HEADS,
    "audio_attention_head_dim": AUDIO_HEAD_DIM,
    "audio_in_channels": AUDIO_LATENT_CHANNELS * AUDIO_MEL_BINS,
    "audio_out_channels": AUDIO_LATENT_CHANNELS * AUDIO_MEL_BINS,
    "audio_cross_attention_dim": AUDIO_HEADS * AUDIO_HEAD_DIM,  # must equal the audio width (see SIZES above)
    "connector_num_layers": 2,
}
SHRINK_CONNECTORS = {
    # LTX-2.0: both connectors share connector_* and run at the Gemma width (V1 projects to it).
    "t20": {"connector_num_attention_heads": 2, "connector_attention_head_dim": GEMMA_HIDDEN // 2},
    # LTX-2.3: the V2 extractor projects to the transformer widths; each connector runs at its modality's width.
    "t23": {
        "connector_num_attention_heads": VIDEO_HEADS,
        "connector_attention_head_dim": VIDEO_HEAD_DIM,
        "audio_connector_num_attention_heads": AUDIO_HEADS,
        "audio_connector_attention_head_dim": AUDIO_HEAD_DIM,
    },
}


def transformer_config(version: str) -> dict:
    cfg = copy.deepcopy(REAL_CONFIG_20 if version == "t20" else REAL_CONFIG_23)
    assert set(SHRINK) | set(SHRINK_CONNECTORS[version]) <= set(cfg)
    cfg.update(SHRINK)
    cfg.update(SHRINK_CONNECTORS[version])
    return cfg


def mlx_config(version: str) -> dict:
    """Flat ``config.json`` as mlx-video-with-audio's ``convert.build_output_config`` writes it, tiny sizes.

    The real LTX-2.0 unified file's config.json has no ``model_version``; ours carries it (as the VAE fixtures do).
    """
    cfg = transformer_config(version)
    out = {
        "model_type": "AudioVideo",
        "model_version": VERSIONS[version],
        **{k: cfg[k] for k in ("num_attention_heads", "attention_head_dim", "in_channels", "out_channels")},
        **{k: cfg[k] for k in ("num_layers", "cross_attention_dim", "caption_channels")},
        **{k: cfg[k] for k in ("audio_num_attention_heads", "audio_attention_head_dim", "audio_in_channels")},
        **{k: cfg[k] for k in ("audio_out_channels", "audio_cross_attention_dim", "positional_embedding_theta")},
        **{k: cfg[k] for k in ("positional_embedding_max_pos", "audio_positional_embedding_max_pos")},
        "timestep_scale_multiplier": cfg["timestep_scale_multiplier"],
        "av_ca_timestep_scale_multiplier": int(cfg["av_ca_timestep_scale_multiplier"]),
        "norm_eps": cfg["norm_eps"],
        "audio_sample_rate": 24000,
        "audio_latent_sample_rate": 16000,
        "audio_hop_length": 160,
        "audio_latent_channels": AUDIO_LATENT_CHANNELS,
        "audio_mel_bins": AUDIO_MEL_BINS,
    }
    if version == "t23":
        out.update(
            {
                "is_v2": True,
                "caption_channels": None,
                "apply_gated_attention": True,
                "cross_attention_adaln": True,
                "connector_positional_embedding_max_pos": cfg["connector_positional_embedding_max_pos"],
                "connector_rope_type": "SPLIT",
                **{k: cfg[k] for k in SHRINK_CONNECTORS["t23"]},
                "caption_projection_first_linear": False,
                "caption_projection_second_linear": False,
            }
        )
    return out


@contextlib.contextmanager
def tiny_gemma():
    """Make ltx-core size the feature extractor for our tiny Gemma (20 wide, 4 hidden states).

    ``encoder_configurator._create_feature_extractor`` reads ``GEMMA3_CONFIG_FOR_LTX.text_config`` (hidden_size,
    num_hidden_layers + 1), a module global, not the checkpoint config.
    """
    saved = encoder_configurator.GEMMA3_CONFIG_FOR_LTX
    tiny = Gemma3TextConfig(hidden_size=GEMMA_HIDDEN, num_hidden_layers=GEMMA_LAYERS)
    encoder_configurator.GEMMA3_CONFIG_FOR_LTX = Gemma3ConfigData(text_config=tiny)
    try:
        yield
    finally:
        encoder_configurator.GEMMA3_CONFIG_FOR_LTX = saved


# ---------------------------------------------------------------------------
# Random weights
# ---------------------------------------------------------------------------


def randomize_(module: nn.Module, gen: torch.Generator) -> None:
    """Randomise biases, q/k RMSNorm weights, the (uninitialised, torch.empty) AdaLN tables and the registers.

    Linear weights keep the default torch init (incl. to_gate_logits: a plain Linear in ltx-core).
    """
    with torch.no_grad():
        for name, param in module.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            parent = name.rsplit(".", 2)[-2] if "." in name else ""
            if parent in ("q_norm", "k_norm"):
                param.copy_(1.0 + torch.randn(param.shape, generator=gen) * 0.1)
            elif leaf == "bias":
                param.copy_(torch.randn(param.shape, generator=gen) * 0.1)
            elif "scale_shift_table" in leaf:
                param.copy_(torch.randn(param.shape, generator=gen) * 0.5)
            elif leaf == "learnable_registers":
                param.copy_(torch.rand(param.shape, generator=gen) * 2.0 - 1.0)  # ltx-core's own init: U(-1, 1)


def round_to_storage_(module: nn.Module) -> None:
    """Round every parameter to bf16 (the storage dtype) and back to float32 (see the VAE fixtures)."""
    with torch.no_grad():
        for tensor in (*module.parameters(), *module.buffers()):
            tensor.copy_(tensor.to(STORAGE_DTYPE).to(torch.float32))


def materialize_meta_(module: nn.Module) -> None:
    """``_build_caption_projections`` creates LTX-2.0's caption projections on the meta device (the builder assigns
    the file's tensors); give them real storage and the default Linear init."""
    for sub in module.modules():
        if any(p.is_meta for p in sub.parameters(recurse=False)):
            sub.to_empty(device="cpu", recurse=False)
            sub.reset_parameters()


def build_models(version: str) -> tuple[LTXModel, EmbeddingsProcessor]:
    cfg = {"transformer": transformer_config(version)}
    gen = torch.Generator().manual_seed(1000 + WEIGHT_SEEDS[version])
    torch.manual_seed(WEIGHT_SEEDS[version])
    transformer = LTXModelConfigurator.from_config(copy.deepcopy(cfg))
    materialize_meta_(transformer)
    with tiny_gemma():
        processor = EmbeddingsProcessorConfigurator.from_config(copy.deepcopy(cfg))
    models = (transformer.float().eval(), processor.float().eval())
    for model in models:
        randomize_(model, gen)
        round_to_storage_(model)
        assert not any(t.is_meta for t in model.parameters())
    return models


# ---------------------------------------------------------------------------
# Checkpoint layouts
# ---------------------------------------------------------------------------

CONNECTOR_NAMES = {"video_connector": "video_embeddings_connector", "audio_connector": "audio_embeddings_connector"}
# mlx-video-with-audio 0.1.37 convert.sanitize_transformer_weights, applied after stripping "model.diffusion_model."
MLX_RENAMES = (
    (".to_out.0.", ".to_out."),
    (".ff.net.0.proj.", ".ff.proj_in."),
    (".ff.net.2.", ".ff.proj_out."),
    (".audio_ff.net.0.proj.", ".audio_ff.proj_in."),
    (".audio_ff.net.2.", ".audio_ff.proj_out."),
    (".linear_1.", ".linear1."),
    (".linear_2.", ".linear2."),
)


def mlx_key(key: str) -> str:
    for old, new in MLX_RENAMES:
        key = key.replace(old, new)
    return key


def torch_key(key: str) -> str:
    """Inverse of mlx_key on the keys these modules have."""
    for old, new in ((".to_out.", ".to_out.0."), (".proj_in.", ".net.0.proj."), (".proj_out.", ".net.2.")):
        key = key.replace(old, new)
    return key.replace(".linear1.", ".linear_1.").replace(".linear2.", ".linear_2.")


def connector_tensors(processor: EmbeddingsProcessor) -> dict[str, torch.Tensor]:
    """``{video,audio}_embeddings_connector.<PyTorch key>`` (the file names of ltx-core's connector submodules)."""
    return {
        f"{file_name}.{key}": value
        for attr, file_name in CONNECTOR_NAMES.items()
        for key, value in getattr(processor, attr).state_dict().items()
    }


def projection_tensors(processor: EmbeddingsProcessor) -> dict[str, torch.Tensor]:
    return {f"text_embedding_projection.{k}": v for k, v in processor.feature_extractor.state_dict().items()}


def official_tensors(transformer: LTXModel, processor: EmbeddingsProcessor) -> dict[str, torch.Tensor]:
    """Inverse of LTXV_MODEL_COMFY_RENAMING_MAP (transformer) and EMBEDDINGS_PROCESSOR_KEY_OPS (the rest)."""
    out = {f"model.diffusion_model.{k}": v for k, v in transformer.state_dict().items()}
    out.update({f"model.diffusion_model.{k}": v for k, v in connector_tensors(processor).items()})
    out.update(projection_tensors(processor))
    return out


def mlx_transformer(transformer: LTXModel) -> dict[str, torch.Tensor]:
    return {mlx_key(k): v for k, v in transformer.state_dict().items()}


def unified_tensors(transformer: LTXModel, processor: EmbeddingsProcessor) -> dict[str, torch.Tensor]:
    """mlx-video-with-audio's model.safetensors (transformer part): ``transformer.*`` (MLX names, incl. the leftover
    connector copies that convert's transformer sanitizer keeps), ``connector.*`` (PyTorch names),
    ``text_embedding_projection.*``."""
    out = {f"transformer.{k}": v for k, v in mlx_transformer(transformer).items()}
    out.update({f"transformer.{mlx_key(k)}": v for k, v in connector_tensors(processor).items()})
    out.update({f"connector.{k}": v for k, v in connector_tensors(processor).items()})
    out.update(projection_tensors(processor))
    return out


def official_path(version: str) -> Path:
    return OUT_DIR / f"{version}_official" / f"ltx-tiny-{version}.safetensors"


def write_checkpoints(version: str, transformer: LTXModel, processor: EmbeddingsProcessor) -> None:
    cfg = transformer_config(version)
    fresh_dir(f"{version}_official")
    save_safetensors(
        official_tensors(transformer, processor),
        official_path(version),
        metadata={"config": json.dumps({"transformer": cfg})},
    )
    if version == "t20":
        unified = fresh_dir("t20_unified")
        save_safetensors(unified_tensors(transformer, processor), unified / "model.safetensors")
        mlx_dir = unified
    else:
        split = fresh_dir("t23_split")
        save_safetensors(mlx_transformer(transformer), split / "transformer.safetensors")
        save_safetensors(
            {**connector_tensors(processor), **projection_tensors(processor)}, split / "connector.safetensors"
        )
        write_json(
            {
                "format": "split",
                "model_version": VERSIONS[version],
                "components": ["transformer", "connector"],
                "source": "tiny",
                "variant": "distilled",
            },
            split / "split_model.json",
        )
        mlx_dir = split
    write_json(mlx_config(version), mlx_dir / "config.json")
    write_json({"transformer": cfg}, mlx_dir / "embedded_config.json")


# ---------------------------------------------------------------------------
# Inputs: Gemma hidden states, latents, positions, timesteps (as ltx-pipelines builds them)
# ---------------------------------------------------------------------------


def text_inputs(gen: torch.Generator) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
    """Gemma-like hidden states (a tuple: embeddings + one per layer, (B, T, D) each; deeper layers larger and
    offset, like a real LLM's residual stream) and the left-padded attention mask (int64, like the tokenizer's)."""
    hidden = tuple(
        torch.randn(1, TEXT_TOKENS, GEMMA_HIDDEN, generator=gen) * (1.0 + 1.5 * layer) + 0.3 * layer
        for layer in range(GEMMA_LAYERS + 1)
    )
    mask = torch.ones(1, TEXT_TOKENS, dtype=torch.int64)
    mask[:, :TEXT_PADDING] = 0
    return hidden, mask


def latent_states(gen: torch.Generator) -> dict[str, torch.Tensor]:
    """Video/audio latent states exactly as ltx-pipelines' noise_video_state / noise_audio_state build them
    (PipelineComponents' patchifiers and scale factors, VideoLatentTools(..., fps) / AudioLatentTools), plus the
    first-latent-frame image conditioning (VideoConditionByLatentIndex, strength 1 -> denoise mask 0)."""
    components = PipelineComponents(dtype=torch.float32, device=torch.device("cpu"))
    video_latent = torch.randn(VIDEO_LATENT_SHAPE.to_torch_shape(), generator=gen)
    audio_latent = torch.randn(AUDIO_LATENT_SHAPE.to_torch_shape(), generator=gen)
    video_tools = VideoLatentTools(components.video_patchifier, VIDEO_LATENT_SHAPE, FPS)
    audio_tools = AudioLatentTools(components.audio_patchifier, AUDIO_LATENT_SHAPE)
    assert video_tools.scale_factors == components.video_scale_factors and video_tools.causal_fix
    video = video_tools.create_initial_state(torch.device("cpu"), torch.float32, initial_latent=video_latent)
    video = VideoConditionByLatentIndex(latent=video_latent[:, :, :1], strength=1.0, latent_idx=0).apply_to(
        video, video_tools
    )
    audio = audio_tools.create_initial_state(torch.device("cpu"), torch.float32, initial_latent=audio_latent)
    return {
        "video_latent_5d": video_latent,
        "video_latent": video.latent,
        "video_positions": video.positions,
        "video_denoise_mask": video.denoise_mask,
        "audio_latent_4d": audio_latent,
        "audio_latent": audio.latent,
        "audio_positions": audio.positions,
        "audio_denoise_mask": audio.denoise_mask,
    }


def timesteps_from_mask(denoise_mask: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """ltx_pipelines.utils.helpers.timesteps_from_mask (that module imports PyAV/PIL, absent here): mask * sigma."""
    return denoise_mask * sigma


def modality(states: dict, kind: str, context: torch.Tensor, sigma: float, context_mask=None) -> Modality:
    """ltx_pipelines.utils.helpers.modality_from_latent_state, but with a selectable context_mask (the pipelines
    pass None). Timesteps are (B, T): the (B, T, 1) mask*sigma squeezed (ltx-core flattens them either way)."""
    sigma_t = torch.tensor([sigma], dtype=torch.float32)
    return Modality(
        latent=states[f"{kind}_latent"],
        sigma=sigma_t,
        timesteps=timesteps_from_mask(states[f"{kind}_denoise_mask"], sigma_t).squeeze(-1),
        positions=states[f"{kind}_positions"],
        context=context,
        enabled=True,
        context_mask=context_mask,
        attention_mask=None,
    )


# ---------------------------------------------------------------------------
# References
# ---------------------------------------------------------------------------


def connector_rope(connector: Embeddings1DConnector, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The (cos, sin) tables Embeddings1DConnector.forward builds (same call, same arguments)."""
    indices_grid = torch.arange(seq_len, dtype=torch.float32)[None, None, :]
    return precompute_freqs_cis(
        indices_grid=indices_grid,
        dim=connector.inner_dim,
        out_dtype=torch.float32,
        theta=connector.positional_embedding_theta,
        max_pos=connector.positional_embedding_max_pos,
        num_attention_heads=connector.num_attention_heads,
        rope_type=connector.rope_type,
        freq_grid_generator=generate_freq_grid_np if connector.double_precision_rope else generate_freq_grid_pytorch,
    )


@torch.no_grad()
def text_references(processor: EmbeddingsProcessor, hidden, mask) -> dict[str, torch.Tensor]:
    refs: dict[str, torch.Tensor] = {}
    video_feats, audio_feats = processor.feature_extractor(hidden, mask, "left")
    refs["video_features"] = video_feats
    if audio_feats is not video_feats:  # V1 returns the same tensor for both connectors
        refs["audio_features"] = audio_feats
    additive = convert_to_additive_mask(mask, video_feats.dtype)
    for kind, connector, feats in (
        ("video", processor.video_connector, video_feats),
        ("audio", processor.audio_connector, audio_feats),
    ):
        assert connector.num_learnable_registers == 128 and connector.learnable_registers.shape[0] == 128
        connector_in, connector_mask = connector._replace_padded_with_learnable_registers(feats, additive)
        assert not connector_mask.any(), "the registers make every position valid"
        refs[f"{kind}_connector_in"] = connector_in
        refs[f"{kind}_connector_rope_cos"], refs[f"{kind}_connector_rope_sin"] = connector_rope(connector, TEXT_TOKENS)
    out = processor.process_hidden_states(hidden, mask, padding_side="left")
    refs["video_context"] = out.video_encoding
    refs["audio_context"] = out.audio_encoding
    refs["context_mask"] = out.attention_mask.to(torch.int32)
    assert out.attention_mask.dtype == torch.int64 and bool(out.attention_mask.all())
    return refs


@torch.no_grad()
def run_model(model: LTXModel, video: Modality | None, audio: Modality | None) -> dict[str, torch.Tensor]:
    video_out, audio_out = model(video=video, audio=audio, perturbations=None)
    out = {"video": video_out}
    if audio_out is not None:
        out["audio"] = audio_out
    return out


@torch.no_grad()
def transformer_references(model: LTXModel, states: dict, text: dict) -> dict[str, torch.Tensor]:
    refs: dict[str, torch.Tensor] = {}
    mask = text["context_mask"].to(torch.int64)  # the processor's returned (binary, all ones) mask
    video = modality(states, "video", text["video_context"], SIGMA, context_mask=mask)
    audio = modality(states, "audio", text["audio_context"], SIGMA, context_mask=mask)

    # Preprocessor outputs (the model's forward calls the same prepare()s): RoPE tables, AdaLN, projected context.
    video_args = model.video_args_preprocessor.prepare(video, audio)
    audio_args = model.audio_args_preprocessor.prepare(audio, video)
    for kind, args in (("video", video_args), ("audio", audio_args)):
        refs[f"rope.{kind}_cos"], refs[f"rope.{kind}_sin"] = args.positional_embeddings
        refs[f"rope.{kind}_cross_cos"], refs[f"rope.{kind}_cross_sin"] = args.cross_positional_embeddings
        refs[f"pre.{kind}_x"] = args.x
        refs[f"pre.{kind}_context"] = args.context
        refs[f"pre.{kind}_timesteps"] = args.timesteps
        refs[f"pre.{kind}_embedded_timestep"] = args.embedded_timestep
        refs[f"pre.{kind}_cross_scale_shift_timestep"] = args.cross_scale_shift_timestep
        refs[f"pre.{kind}_cross_gate_timestep"] = args.cross_gate_timestep
        if args.prompt_timestep is not None:
            refs[f"pre.{kind}_prompt_timestep"] = args.prompt_timestep

    # Hidden states after each block.
    captured: dict[str, torch.Tensor] = {}

    def hook(index: int):
        def save(_module, _args, output):
            captured[f"block{index}.video_x"] = output[0].x
            captured[f"block{index}.audio_x"] = output[1].x

        return save

    handles = [block.register_forward_hook(hook(i)) for i, block in enumerate(model.transformer_blocks)]
    out = run_model(model, video, audio)
    for handle in handles:
        handle.remove()
    refs.update(captured)
    refs.update({f"out.{k}": v for k, v in out.items()})

    # The pipelines pass context_mask=None; with the processor's all-ones mask the result must be the same.
    no_mask = run_model(model, replace(video, context_mask=None), replace(audio, context_mask=None))
    for key, value in no_mask.items():
        assert torch.equal(value, out[key]), f"context_mask None != all ones ({key})"

    # The Gemma token mask as context_mask (0 = padding): exercises the additive masking of the text cross-attention.
    tokmask = text["token_mask"]
    out_tokmask = run_model(model, replace(video, context_mask=tokmask), replace(audio, context_mask=tokmask))
    refs.update({f"out_tokmask.{k}": v for k, v in out_tokmask.items()})
    # Video only (audio=None): no audio<->video cross-attention at all.
    refs.update({f"out_video_only.{k}": v for k, v in run_model(model, video, None).items()})
    # Audio at another sigma: the a2v/v2a gates of each modality are driven by the *other* modality's sigma, the
    # scale/shift by its own timesteps (ltx-core 1.2.0's rule).
    audio_x = modality(states, "audio", text["audio_context"], CROSS_SIGMA_AUDIO, context_mask=mask)
    refs.update({f"out_xsigma.{k}": v for k, v in run_model(model, video, audio_x).items()})
    return refs


@torch.no_grad()
def make_references() -> tuple[dict[str, torch.Tensor], dict[str, tuple[LTXModel, EmbeddingsProcessor]]]:
    gen = torch.Generator().manual_seed(INPUT_SEED)
    hidden, token_mask = text_inputs(gen)
    states = latent_states(gen)
    refs: dict[str, torch.Tensor] = {
        "inputs.gemma_hidden_states": torch.stack(hidden, dim=0),  # (L, B, T, D): the tuple, stacked
        "inputs.attention_mask": token_mask.to(torch.int32),
        **{f"inputs.{k}": v for k, v in states.items() if "denoise_mask" not in k},
        "inputs.video_timesteps": timesteps_from_mask(states["video_denoise_mask"], SIGMA).squeeze(-1),
        "inputs.audio_timesteps": timesteps_from_mask(states["audio_denoise_mask"], SIGMA).squeeze(-1),
        "inputs.sigma": torch.tensor([SIGMA]),
        "inputs.xsigma_audio_sigma": torch.tensor([CROSS_SIGMA_AUDIO]),
        "inputs.video_latent_shape": torch.tensor(list(VIDEO_LATENT_SHAPE), dtype=torch.int32),
        "inputs.audio_latent_shape": torch.tensor(list(AUDIO_LATENT_SHAPE), dtype=torch.int32),
        "inputs.fps": torch.tensor([FPS]),
    }
    models = {}
    for version in VERSIONS:
        transformer, processor = build_models(version)
        models[version] = (transformer, processor)
        text = text_references(processor, hidden, token_mask)
        refs.update({f"{version}.text.{k}": v for k, v in text.items()})
        text["token_mask"] = token_mask
        refs.update({f"{version}.{k}": v for k, v in transformer_references(transformer, states, text).items()})
    return refs, models


# ---------------------------------------------------------------------------
# Self-checks: the official files load back into ltx-core and reproduce the references; the MLX files hold the same
# tensors; key names follow the real manifests (provenance: the full manifests live outside this repository, see
# MANIFEST_DIR; the check is skipped without them).
# ---------------------------------------------------------------------------


@torch.no_grad()
def load_official(configurator, path: Path, sd_ops) -> nn.Module:
    model = SingleGPUModelBuilder(configurator, str(path), sd_ops).build(device=torch.device("cpu"))
    tensors = [*model.parameters(), *model.buffers()]
    assert not any(t.is_meta for t in tensors), f"{path}: uninitialised tensors"
    for tensor in tensors:  # copies into fresh (aligned) memory: see make_video_refs.load_official
        tensor.data = tensor.data.clone()
    return model.float().eval()


@torch.no_grad()
def verify_official(refs: dict, hidden: tuple, token_mask: torch.Tensor, states: dict) -> None:
    for version in VERSIONS:
        path = official_path(version)
        transformer = load_official(LTXModelConfigurator, path, LTXV_MODEL_COMFY_RENAMING_MAP)
        with tiny_gemma():
            processor = load_official(EmbeddingsProcessorConfigurator, path, EMBEDDINGS_PROCESSOR_KEY_OPS)
        out = processor.process_hidden_states(hidden, token_mask, padding_side="left")
        for name, got in (("video_context", out.video_encoding), ("audio_context", out.audio_encoding)):
            assert torch.equal(got, refs[f"{version}.text.{name}"]), f"{version}: official {name} differs"
        mask = out.attention_mask
        video = modality(states, "video", out.video_encoding, SIGMA, context_mask=mask)
        audio = modality(states, "audio", out.audio_encoding, SIGMA, context_mask=mask)
        got = run_model(transformer, video, audio)
        for key, value in got.items():
            assert torch.equal(value, refs[f"{version}.out.{key}"]), f"{version}: official out.{key} differs"
        assert torch.equal(run_model(transformer, video, None)["video"], refs[f"{version}.out_video_only.video"])


def verify_mlx_layouts() -> None:
    for version in VERSIONS:
        official = load_file(official_path(version))
        if version == "t20":
            stored = load_file(OUT_DIR / "t20_unified" / "model.safetensors")
            back = {}
            for key, value in stored.items():
                if key.startswith("transformer."):
                    name = "model.diffusion_model." + torch_key(key.removeprefix("transformer."))
                    if "_embeddings_connector." in key:  # leftover copy: must equal the connector.* original
                        assert torch.equal(value, stored["connector." + torch_key(key.removeprefix("transformer."))])
                        continue
                elif key.startswith("connector."):
                    name = "model.diffusion_model." + key.removeprefix("connector.")
                else:
                    name = key
                back[name] = value
        else:
            split = OUT_DIR / "t23_split"
            transformer = load_file(split / "transformer.safetensors")
            back = {f"model.diffusion_model.{torch_key(k)}": v for k, v in transformer.items()}
            for key, value in load_file(split / "connector.safetensors").items():
                back[key if key.startswith("text_embedding_projection.") else f"model.diffusion_model.{key}"] = value
        assert set(back) == set(official), f"{version}: MLX keys do not map back onto the official ones"
        for key, value in back.items():
            assert torch.equal(value, official[key]), f"{version}: {key}"


def _patterns(keys) -> set[str]:
    return {re.sub(r"\.\d+\.", ".N.", key) for key in keys}


def verify_manifest_key_names() -> None:
    """Our key spellings (block indices folded to N) == those of the real checkpoints' manifests (if available)."""
    if not MANIFEST_DIR.is_dir():
        print(f"(manifest key check skipped: {MANIFEST_DIR} not found)")
        return

    def manifest(name: str) -> dict:
        return json.loads((MANIFEST_DIR / f"{name}.json").read_text())

    def check(label: str, ours, theirs) -> None:
        ours, theirs = _patterns(ours), _patterns(theirs)
        assert ours == theirs, f"{label}: only ours {sorted(ours - theirs)[:8]}, only real {sorted(theirs - ours)[:8]}"

    prefixes = ("model.diffusion_model.", "text_embedding_projection.")
    for version, name in (("t20", "ltx-2-19b-official"), ("t23", "ltx-2.3-22b-official")):
        real = manifest(name)
        expected_cfg = REAL_CONFIG_20 if version == "t20" else REAL_CONFIG_23
        assert real["config_used"]["transformer"] == expected_cfg, f"{name}: config_used differs from ours"
        check(name, load_file(official_path(version)), [k for k in real["tensors"] if k.startswith(prefixes)])
    real = manifest("ltx2-mlx-av-unified")["tensors"]
    prefixes = ("transformer.", "connector.", "text_embedding_projection.")
    unified = load_file(OUT_DIR / "t20_unified" / "model.safetensors")
    check("unified", unified, [k for k in real if k.startswith(prefixes)])
    real = manifest("ltx-2.3-mlx-q4-split")["tensors"]
    for file in ("transformer", "connector"):
        theirs = [
            k.split(":", 1)[1]
            for k in real
            if k.startswith(f"{file}.safetensors:") and not k.endswith((".scales", ".biases"))
        ]
        check(f"split {file}", load_file(OUT_DIR / "t23_split" / f"{file}.safetensors"), theirs)
    print("key names match the real manifests (official 2.0/2.3, unified 2.0, split 2.3)")


def main() -> None:
    torch.set_num_threads(1)
    ltx_core_1_2_rule.apply()  # the references follow ltx-core 1.2.0 (see ltx_core_1_2_rule.py)
    print(f"ltx-core 1.0.0 + 1.2.0 rule reproduces fixture b: {ltx_core_1_2_rule.check_against_fixture()}")
    torch.use_deterministic_algorithms(True)
    OUT_DIR.mkdir(parents=True, exist_ok=True)

    refs, models = make_references()
    for version, (transformer, processor) in models.items():
        print(f"{version}:")
        write_checkpoints(version, transformer, processor)
    arrays = {key: value.detach().numpy() for key, value in refs.items()}
    arrays = {k: v if v.dtype == np.int32 else v.astype(np.float32) for k, v in arrays.items()}
    save_npz(arrays, OUT_DIR / "refs.npz")

    gen = torch.Generator().manual_seed(INPUT_SEED)  # regenerate the inputs independently of the refs dict
    hidden, token_mask = text_inputs(gen)
    states = latent_states(gen)
    verify_official(refs, hidden, token_mask, states)
    verify_mlx_layouts()
    verify_manifest_key_names()
    print("self-checks passed: official files reproduce the references in ltx-core; MLX files match them")

    print("refs.npz:")
    for key, array in arrays.items():
        print(f"  {key:44s} {array.dtype!s:8s} {array.shape!s:18s} std {array.astype(np.float64).std():.3f}")
    total = sum(p.stat().st_size for p in OUT_DIR.rglob("*") if p.is_file())
    print(f"total {total / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
