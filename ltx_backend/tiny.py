"""The built-in tiny model: a complete LTX-2.0-shaped checkpoint with random weights, small enough for a CPU.

It exercises every stage of a real generation (Gemma text encoding, connectors, the audio-video transformer in
both stages, the x2 latent upsampler, the video and audio VAEs, the vocoder) with real compression factors
(x8 time, x32 space, 100 mel frames per second, 24 kHz stereo), so a generated file has the requested size,
length and sample rate. The pictures and sound are noise: the weights are random. Written in
mlx-video-with-audio's unified layout (``model.safetensors`` + ``config.json`` + ``embedded_config.json``), with
its Gemma 3 text encoder in ``text_encoder/``, so loading it takes the same path as a real conversion.
"""

from __future__ import annotations

import json
import os
import shutil
from importlib import resources
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten

from ltx_backend.media.atomic import atomic_directory
from ltx_backend.models.audio_vae import AudioDecoder, AudioEncoder, AudioVAEConfig
from ltx_backend.models.gemma3 import Gemma3Config, Gemma3TextModel
from ltx_backend.models.text_connector import TextEmbeddingsProcessor, TextProcessorConfig
from ltx_backend.models.transformer import LTXModel, TransformerConfig
from ltx_backend.models.upsampler import LatentUpsampler, UpsamplerConfig
from ltx_backend.models.video_vae import VideoDecoder, VideoEncoder, VideoVAEConfig
from ltx_backend.models.vocoder import Vocoder, VocoderConfig

SEED = 20260101
NAME = "tiny"  # what --model accepts for it
TEXT_ENCODER_ASSETS = "tiny_text_encoder"

TRANSFORMER = {
    "num_attention_heads": 2, "attention_head_dim": 16, "in_channels": 8, "out_channels": 8, "num_layers": 2,
    "cross_attention_dim": 32, "caption_channels": 64, "norm_eps": 1e-06, "audio_num_attention_heads": 2,
    "audio_attention_head_dim": 8, "audio_in_channels": 16, "audio_out_channels": 16,
    "audio_cross_attention_dim": 16, "positional_embedding_theta": 10000.0,
    "positional_embedding_max_pos": [20, 2048, 2048], "audio_positional_embedding_max_pos": [20],
    "timestep_scale_multiplier": 1000, "av_ca_timestep_scale_multiplier": 1000, "rope_type": "split",
    "frequencies_precision": "float64", "use_middle_indices_grid": True, "connector_num_attention_heads": 2,
    "connector_attention_head_dim": 32, "connector_num_layers": 1, "connector_num_learnable_registers": 128,
}  # fmt: skip
VAE = {
    "dims": 3, "in_channels": 3, "latent_channels": 8, "out_channels": 3, "patch_size": 4, "norm_layer": "pixel_norm",
    "latent_log_var": "uniform", "causal_decoder": False, "decoder_base_channels": 4, "timestep_conditioning": False,
    "decoder_blocks": [["res_x", {"num_layers": 1, "inject_noise": False}],
                       ["compress_all", {"residual": True, "multiplier": 2}],
                       ["res_x", {"num_layers": 1, "inject_noise": False}],
                       ["compress_all", {"residual": True, "multiplier": 2}],
                       ["res_x", {"num_layers": 1, "inject_noise": False}],
                       ["compress_all", {"residual": True, "multiplier": 2}],
                       ["res_x", {"num_layers": 1, "inject_noise": False}]],
    "encoder_blocks": [["res_x", {"num_layers": 1}], ["compress_space_res", {"multiplier": 2}],
                       ["res_x", {"num_layers": 1}], ["compress_time_res", {"multiplier": 1}],
                       ["res_x", {"num_layers": 1}], ["compress_all_res", {"multiplier": 2}],
                       ["res_x", {"num_layers": 0}], ["compress_all_res", {"multiplier": 2}],
                       ["res_x", {"num_layers": 0}]],
}  # fmt: skip
AUDIO_VAE = {  # ch must equal z_channels x 16 latent mel bins: ltx-core sizes the statistics by ch
    "model": {"params": {
        "ddconfig": {"double_z": True, "mel_bins": 64, "z_channels": 1, "resolution": 16, "in_channels": 2,
                     "out_ch": 2, "ch": 16, "ch_mult": [1, 1, 2], "num_res_blocks": 1, "attn_resolutions": [],
                     "dropout": 0.0, "mid_block_add_attention": False, "norm_type": "pixel",
                     "causality_axis": "height"},
        "sampling_rate": 16000}},
    "preprocessing": {"stft": {"filter_length": 1024, "hop_length": 160, "causal": True},
                      "mel": {"n_mel_channels": 64}},
}  # fmt: skip
VOCODER = {  # 240 samples per mel frame: 100 mel frames per second -> 24 kHz
    "resblock": "1", "stereo": True, "upsample_initial_channel": 16, "upsample_rates": [5, 4, 4, 3],
    "upsample_kernel_sizes": [10, 8, 8, 6], "resblock_kernel_sizes": [3], "resblock_dilation_sizes": [[1, 3]],
    "output_sampling_rate": 24000,
}  # fmt: skip
UPSAMPLER = UpsamplerConfig(in_channels=8, mid_channels=32, num_blocks_per_stage=1)
MODEL_INFO = {
    "model_type": "AudioVideo", "model_version": "2.0.0", "variant": "distilled", "tiny": True,
    "audio_sample_rate": 24000, "audio_latent_sample_rate": 16000, "audio_hop_length": 160,
    "audio_latent_channels": 1, "audio_mel_bins": 16,
}  # fmt: skip


def _mlx_spelling(key: str) -> str:
    """Our parameter path -> the key spelling of mlx-video-with-audio's files (PyTorch module paths)."""
    key = key.replace(".to_out.", ".to_out.0.").replace(".proj_in.", ".net.0.proj.")
    return key.replace(".ff.proj_out.", ".ff.net.2.").replace(".audio_ff.proj_out.", ".audio_ff.net.2.")


def _connector_spelling(key: str) -> str:
    for ours, stored in (
        ("feature_extractor.", "text_embedding_projection."),
        ("video_connector.", "connector.video_embeddings_connector."),
        ("audio_connector.", "connector.audio_embeddings_connector."),
    ):
        if key.startswith(ours):
            key = stored + key[len(ours) :]
    key = key.replace(".to_out.", ".to_out.0.").replace(".proj_in.", ".net.0.proj.")
    return key.replace(".proj_out.", ".net.2.")


def _torch_layout(array: mx.array) -> mx.array:
    """MLX conv weight (O, *kernel, I) -> PyTorch (O, I, *kernel), as the unified files keep the upsampler."""
    if array.ndim < 3:
        return array
    return array.moveaxis(-1, 1)


def _params(module: nn.Module) -> dict[str, mx.array]:
    return dict(tree_flatten(module.parameters()))


def tiny_weights(seed: int = SEED) -> dict[str, mx.array]:
    """Every tensor of the tiny checkpoint, keyed as in the unified file; the same seed gives the same bytes."""
    mx.random.seed(seed)
    weights: dict[str, mx.array] = {}
    transformer_config = TransformerConfig.from_section(TRANSFORMER)
    for key, value in _params(LTXModel(transformer_config)).items():
        weights["transformer." + _mlx_spelling(key)] = value
    gemma = Gemma3Config.from_dict(_text_encoder_config())
    processor = TextEmbeddingsProcessor(
        TextProcessorConfig.from_section(TRANSFORMER, gemma.hidden_size, gemma.num_hidden_layers + 1)
    )
    for key, value in _params(processor).items():
        weights[_connector_spelling(key)] = value
    vae = VideoVAEConfig.from_config({"vae": VAE})
    for prefix, module in (("vae_decoder.", VideoDecoder(vae)), ("vae_encoder.", VideoEncoder(vae))):
        weights.update({prefix + key: value for key, value in _params(module).items()})
    audio = AudioVAEConfig.from_config({"audio_vae": AUDIO_VAE})
    for prefix, module in (("encoder.", AudioEncoder(audio)), ("decoder.", AudioDecoder(audio))):
        for key, value in _params(module).items():  # the statistics are shared: stored once, unprefixed
            weights["audio_vae." + (key if key.startswith("per_channel_statistics.") else prefix + key)] = value
    vocoder = Vocoder(VocoderConfig.from_section(VOCODER))
    weights.update({"vocoder." + key: value for key, value in _params(vocoder).items()})
    upsampler = LatentUpsampler(UPSAMPLER)
    weights.update({"upsampler." + key: _torch_layout(value) for key, value in _params(upsampler).items()})
    return weights


def _text_encoder_config() -> dict:
    return json.loads(resources.files("ltx_backend.assets").joinpath(TEXT_ENCODER_ASSETS, "config.json").read_text())


def write_tiny_model(path: str | Path, seed: int = SEED) -> Path:
    """Write the tiny checkpoint (about 6 MB) to ``path``, atomically; returns ``path``."""
    path = Path(path)
    with atomic_directory(path) as folder:
        weights = tiny_weights(seed)
        mx.eval(weights)
        mx.save_safetensors(str(folder / "model.safetensors"), weights, metadata={"format": "mlx"})
        (folder / "config.json").write_text(json.dumps(MODEL_INFO, indent=2))
        embedded = {"transformer": TRANSFORMER, "vae": VAE, "audio_vae": AUDIO_VAE, "vocoder": VOCODER}
        (folder / "embedded_config.json").write_text(json.dumps(embedded, indent=2))
        _write_text_encoder(folder / "text_encoder", seed)
    return path


def _write_text_encoder(folder: Path, seed: int) -> None:
    folder.mkdir()
    assets = resources.files("ltx_backend.assets").joinpath(TEXT_ENCODER_ASSETS)
    for asset in assets.iterdir():
        with resources.as_file(asset) as source:
            shutil.copyfile(source, folder / asset.name)
    mx.random.seed(seed + 1)
    model = Gemma3TextModel(Gemma3Config.from_dict(_text_encoder_config()))
    weights = {"language_model.model." + key: value for key, value in _params(model).items()}
    mx.eval(weights)
    mx.save_safetensors(str(folder / "model.safetensors"), weights, metadata={"format": "mlx"})


def tiny_model_dir() -> Path:
    """Where ``--model tiny`` lives: ``$LTX_BACKEND_HOME/tiny`` (default ``~/.cache/ltx-backend/tiny``)."""
    home = os.environ.get("LTX_BACKEND_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", "~/.cache"), "ltx-backend"
    )
    return Path(home).expanduser() / NAME


def ensure_tiny_model() -> Path:
    """The tiny model's directory, written on first use (it takes well under a second)."""
    path = tiny_model_dir()
    if not (path / "model.safetensors").is_file():
        write_tiny_model(path)
    return path
