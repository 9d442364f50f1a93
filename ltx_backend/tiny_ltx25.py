"""The tiny LTX-2.5 model: random weights of the real architecture in Lightricks' official split release layout.

One file per part, as ``Lightricks/LTX-2.5`` ships them (PyTorch key names and layouts, configs in the safetensors
metadata; ``ltx25-facts`` section 7):

    diffusion_models/ltx-2.5-tiny-distilled-transformer-f32.safetensors   model.diffusion_model.* (+ connectors)
                    (dev variant: ltx-2.5-tiny-dev-transformer-f32.safetensors)
    text_encoders/gemma4-tiny-with-proj-ltx-2.5-f32.safetensors           Gemma 4 (Comfy-flat), projection, tokenizer
    vae/ltx-2.5-tiny-video-vae-conv-f32.safetensors                       vae.{encoder,decoder,per_channel_statistics}
    vae/ltx-2.5-tiny-audio-vae-f32.safetensors                            audio_vae.*, vocoder.*
    latent_upscale_models/ltx-2.5-tiny-latent-spatial-upscaler-x2-f32-1.0.safetensors
    model_patches/ltx-2.5-tiny-duration-head-f32.safetensors              duration_head.*
    loras/ltx-2.5-tiny-distilled-lora-f32.safetensors                     dev variant only: the stage-2 LoRA

The transformer has the 2.5 flags (no video feed-forward biases, the keyframe marker), the text encoder is a tiny
Gemma 4 unified (5 sliding + 1 full layer, values from keys on the full layer) whose tokenizer adds no BOS, as
Gemma 4's does not. The VAEs, vocoder and upsampler are the tiny 2.3 ones (2.5 keeps their architecture).

The dev variant is the same release with the dev transformer's name (the variant is read from it) and the distilled
LoRA the two-stage dev flow fuses for stage 2 (``loras/``, as ``ltx-2.5-22b-distilled-lora-450-bf16`` ships), so
the guided two-stage path runs offline. Its weights are as random as the distilled model's.
"""

from __future__ import annotations

import json
import math
from importlib import resources
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx.utils import tree_flatten

from ltx_backend.models.audio_vae import AudioDecoder, AudioEncoder, AudioVAEConfig
from ltx_backend.models.bwe import BWEConfig, VocoderWithBWE
from ltx_backend.models.duration_head import DurationHead, DurationHeadConfig
from ltx_backend.models.gemma4 import Gemma4Config, Gemma4TextModel
from ltx_backend.models.text_connector import TextEmbeddingsProcessor, TextProcessorConfig
from ltx_backend.models.transformer import LTXModel, TransformerConfig
from ltx_backend.models.upsampler import LatentUpsampler
from ltx_backend.models.video_vae import VideoDecoder, VideoEncoder, VideoVAEConfig
from ltx_backend.tiny import random_lora
from ltx_backend.weights.plan import TORCH_TO_MLX, expected_params

MODEL_VERSION = "2.5.0"
GEMMA_VERSION = "gemma4-tiny-ltx-v1"  # the pairing tag: transformer gemma_source_checkpoint == TE gemma_config
FILES = {
    "transformer": "diffusion_models/ltx-2.5-tiny-distilled-transformer-f32.safetensors",
    "text_encoder": "text_encoders/gemma4-tiny-with-proj-ltx-2.5-f32.safetensors",
    "vae": "vae/ltx-2.5-tiny-video-vae-conv-f32.safetensors",
    "audio": "vae/ltx-2.5-tiny-audio-vae-f32.safetensors",
    "upsampler": "latent_upscale_models/ltx-2.5-tiny-latent-spatial-upscaler-x2-f32-1.0.safetensors",
    "duration_head": "model_patches/ltx-2.5-tiny-duration-head-f32.safetensors",
}
DEV_FILES = {
    "transformer": "diffusion_models/ltx-2.5-tiny-dev-transformer-f32.safetensors",
    "distilled_lora": "loras/ltx-2.5-tiny-distilled-lora-f32.safetensors",
}
VARIANTS = ("distilled", "dev")
LORA_RANK, LORA_SCALE = 4, 0.2
DURATION_HEAD = {"pooler_hidden_dim": 16, "num_queries": 1, "num_pooler_heads": 4, "mlp_hidden": 16}
DURATION_SECONDS = 1.5  # the head's output bias: random weights then predict about a second (short test videos)
TOKENIZER_CONFIG = {"bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>", "unk_token": "<unk>"}


def _gemma_config(vocab_size: int) -> dict:
    """A Gemma 4 unified ``gemma_config`` at the tiny scale (the layout of the real file's metadata)."""
    text = {
        "model_type": "gemma4_unified_text", "vocab_size": vocab_size, "hidden_size": 64, "intermediate_size": 128,
        "num_hidden_layers": 6, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
        "global_head_dim": 32, "num_global_key_value_heads": 1, "attention_k_eq_v": True, "num_kv_shared_layers": 0,
        "use_double_wide_mlp": False, "sliding_window": 1024,
        "layer_types": ["sliding_attention"] * 5 + ["full_attention"],
        "rope_parameters": {
            "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
            "full_attention": {"rope_type": "proportional", "rope_theta": 1000000.0, "partial_rotary_factor": 0.25},
        },
        "rms_norm_eps": 1e-06, "pad_token_id": 0, "bos_token_id": 2, "eos_token_id": 1,
        "hidden_activation": "gelu_pytorch_tanh", "use_bidirectional_attention": "vision", "tie_word_embeddings": True,
    }  # fmt: skip
    return {"model_type": "gemma4_unified", "gemma_version": GEMMA_VERSION, "text_config": text}


def _sections() -> dict:
    from ltx_backend.tiny import AUDIO_VAE_23, TRANSFORMER_23, VAE_23, VOCODER_23

    transformer = {**TRANSFORMER_23, "ff_bias": False, "use_keyframes_abs_pos_embedding": True}
    vae = {**VAE_23, "_class_name": "CausalVideoAutoencoder"}
    return {"transformer": transformer, "vae": vae, "audio_vae": AUDIO_VAE_23, "vocoder": VOCODER_23}


def _torch_params(module: nn.Module, prefix: str = "") -> dict[str, mx.array]:
    """A module's parameters in PyTorch layout (conv weights permuted back), keyed ``prefix + our key``."""
    values = dict(tree_flatten(module.parameters()))
    out = {}
    for spec in expected_params(module):
        value = values[spec.key]
        if spec.kind != "plain":
            value = value.transpose(np.argsort(TORCH_TO_MLX[spec.kind]).tolist())
        out[prefix + spec.key] = value
    return out


def _official_transformer_key(key: str) -> str:
    """Our transformer / connector key -> ltx-core's (``to_out.0``, ``ff.net.0.proj``, ``ff.net.2``)."""
    from ltx_backend.tiny import _mlx_spelling

    return "model.diffusion_model." + _mlx_spelling("." + key)[1:]


def _tokenizer_json() -> str:
    """The tiny word-piece tokenizer without its BOS post-processor: Gemma 4's tokenizer adds no BOS."""
    from ltx_backend.tiny import TEXT_ENCODER_ASSETS

    folder = resources.files("ltx_backend.assets").joinpath(TEXT_ENCODER_ASSETS)
    tokenizer = json.loads(folder.joinpath("tokenizer.json").read_text())
    tokenizer["post_processor"] = None
    return json.dumps(tokenizer)


def _blob(text: str) -> mx.array:
    return mx.array(np.frombuffer(text.encode("utf-8"), dtype=np.uint8))


def tiny_ltx25_files(seed: int, variant: str = "distilled") -> dict[str, tuple[dict[str, mx.array], dict[str, str]]]:
    """file name -> (tensors, metadata) of the tiny 2.5 release (`variant` ``distilled`` or ``dev``); seeded,
    random."""
    if variant not in VARIANTS:
        raise ValueError(f"tiny 2.5 variant must be one of {VARIANTS}, not {variant!r}")
    names = {**FILES, **(DEV_FILES if variant == "dev" else {})}
    mx.random.seed(seed)
    sections = _sections()
    version = {"model_version": MODEL_VERSION}
    files: dict[str, tuple[dict[str, mx.array], dict[str, str]]] = {}

    transformer = LTXModel(TransformerConfig.from_section(sections["transformer"]))
    marker = transformer.keyframes_abs_pos_embedding
    transformer.keyframes_abs_pos_embedding = 0.5 * mx.random.normal(marker.shape)  # zero-initialised in ltx-core
    tensors = {_official_transformer_key(k): v for k, v in tree_flatten(transformer.parameters())}
    tokenizer = _tokenizer_json()
    gemma_raw = _gemma_config(len(json.loads(tokenizer)["model"]["vocab"]))
    gemma = Gemma4Config.from_dict(gemma_raw)
    processor = TextEmbeddingsProcessor(
        TextProcessorConfig.from_section(sections["transformer"], gemma.hidden_size, gemma.num_hidden_layers + 1)
    )
    projection = {}
    for key, value in tree_flatten(processor.parameters()):
        if key.startswith("feature_extractor."):
            projection["text_embedding_projection." + key.removeprefix("feature_extractor.")] = value
        else:
            tensors[_official_transformer_key(key.replace("_connector.", "_embeddings_connector.", 1))] = value
    source = {"ltx_version": MODEL_VERSION, "gemma_version": GEMMA_VERSION}
    metadata = {**version, "config": json.dumps({"transformer": sections["transformer"]}),
                "gemma_source_checkpoint": json.dumps(source)}  # fmt: skip
    files[names["transformer"]] = (tensors, metadata)
    if variant == "dev":  # its own key: the other files' values do not depend on the variant
        lora = random_lora(transformer, LORA_RANK, seed + 2, every=2, scale=LORA_SCALE)
        files[names["distilled_lora"]] = (lora, {})

    te = {"model." + k: v for k, v in tree_flatten(Gemma4TextModel(gemma).parameters())}
    te.update(projection)
    te["tokenizer_json"] = _blob(tokenizer)
    te["hf_asset__tokenizer_config.json"] = _blob(json.dumps(TOKENIZER_CONFIG))
    files[FILES["text_encoder"]] = (te, {"format": "pt", "gemma_config": json.dumps(gemma_raw)})

    vae_config = VideoVAEConfig.from_config({"vae": sections["vae"]})
    vae = {
        **_torch_params(VideoDecoder(vae_config), "vae.decoder."),
        **_torch_params(VideoEncoder(vae_config), "vae.encoder."),
    }
    vae_metadata = {**version, "config": json.dumps({"vae": sections["vae"]})}
    files[FILES["vae"]] = (_official_statistics(vae, "vae."), vae_metadata)

    audio_config = AudioVAEConfig.from_config({"audio_vae": sections["audio_vae"]})
    audio = {
        **_torch_params(AudioEncoder(audio_config), "audio_vae.encoder."),
        **_torch_params(AudioDecoder(audio_config), "audio_vae.decoder."),
        **_torch_params(VocoderWithBWE(BWEConfig.from_section(sections["vocoder"])), "vocoder."),
    }
    audio_sections = {"audio_vae": sections["audio_vae"], "vocoder": sections["vocoder"]}
    audio_metadata = {**version, "config": json.dumps(audio_sections)}
    files[FILES["audio"]] = (_official_statistics(audio, "audio_vae."), audio_metadata)

    from ltx_backend.tiny import UPSAMPLER, UPSCALER_CONFIG_23

    files[FILES["upsampler"]] = (_torch_params(LatentUpsampler(UPSAMPLER)), {"config": json.dumps(UPSCALER_CONFIG_23)})

    dims = {"cross_attention_dim": sections["transformer"]["cross_attention_dim"],
            "audio_cross_attention_dim": sections["transformer"]["audio_cross_attention_dim"]}  # fmt: skip
    head_config = {"transformer": dims, "duration_head": DURATION_HEAD}
    head = DurationHead(DurationHeadConfig.from_config(head_config))
    head.mlp_out.bias = mx.full(head.mlp_out.bias.shape, math.log(DURATION_SECONDS))
    head.mlp_out.weight = 0.1 * head.mlp_out.weight
    tensors = {"duration_head." + k: v for k, v in tree_flatten(head.parameters())}
    files[FILES["duration_head"]] = (tensors, {**version, "config": json.dumps(head_config)})
    return files


def _official_statistics(tensors: dict[str, mx.array], prefix: str) -> dict[str, mx.array]:
    """The encoder's and decoder's copies of the latent statistics stored once, as ltx-core names them."""
    out = {}
    for key, value in tensors.items():
        if ".per_channel_statistics." in key:
            leaf = key.rsplit(".", 1)[1]
            out[f"{prefix}per_channel_statistics.{ {'mean': 'mean-of-means', 'std': 'std-of-means'}[leaf] }"] = value
        else:
            out[key] = value
    return out


def write_tiny_ltx25(folder: Path, seed: int, variant: str = "distilled") -> None:
    """Write the tiny 2.5 release (`variant` ``distilled`` or ``dev``) into `folder` (an empty directory)."""
    files = tiny_ltx25_files(seed, variant)
    for name, (tensors, metadata) in files.items():
        mx.eval(tensors)
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        mx.save_safetensors(str(path), tensors, metadata=metadata)
