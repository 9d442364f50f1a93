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
from ltx_backend.models.bwe import BWEConfig, VocoderWithBWE
from ltx_backend.models.gemma3 import Gemma3Config, Gemma3TextModel
from ltx_backend.models.text_connector import TextEmbeddingsProcessor, TextProcessorConfig
from ltx_backend.models.transformer import LTXModel, TransformerConfig
from ltx_backend.models.upsampler import LatentUpsampler, UpsamplerConfig
from ltx_backend.models.video_vae import VideoDecoder, VideoEncoder, VideoVAEConfig
from ltx_backend.models.vocoder import Vocoder, VocoderConfig
from ltx_backend.weights.transformer import LTX2_TRANSFORMER_SECTION, quantizable_layer

SEED = 20260101
NAME = "tiny"  # what --model accepts for it
TEXT_ENCODER_ASSETS = "tiny_text_encoder"

# The real LTX-2.0 transformer section with only the sizes shrunk.
TRANSFORMER = {
    **LTX2_TRANSFORMER_SECTION, "num_attention_heads": 2, "attention_head_dim": 16, "in_channels": 8,
    "out_channels": 8, "num_layers": 2, "cross_attention_dim": 32, "caption_channels": 64,
    "audio_num_attention_heads": 2, "audio_attention_head_dim": 8, "audio_in_channels": 16, "audio_out_channels": 16,
    "audio_cross_attention_dim": 16, "connector_num_attention_heads": 2, "connector_attention_head_dim": 32,
    "connector_num_layers": 1,
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
# LTX-2.3: gated attention, cross-attention AdaLN, V2 text projection, BigVGAN + bandwidth extension, the 2.3
# VAE block kinds, the v1.1 upscaler; widths of 64 so that the block linears can be stored 4-bit (group 64).
TRANSFORMER_23 = {
    **TRANSFORMER, "attention_head_dim": 32, "cross_attention_dim": 64, "audio_attention_head_dim": 16,
    "audio_cross_attention_dim": 32, "av_ca_timestep_scale_multiplier": 1000.0, "apply_gated_attention": True,
    "cross_attention_adaln": True, "caption_proj_before_connector": True, "caption_projection_first_linear": False,
    "caption_projection_second_linear": False, "caption_proj_input_norm": False,
    "connector_apply_gated_attention": True, "audio_connector_num_attention_heads": 2,
    "audio_connector_attention_head_dim": 16, "connector_positional_embedding_max_pos": [4096],
}  # fmt: skip
VAE_23 = {
    **VAE, "spatial_padding_mode": "zeros",
    "decoder_blocks": [["res_x", {"num_layers": 1}], ["compress_space", {"multiplier": 2}],
                       ["res_x", {"num_layers": 1}], ["compress_time", {"multiplier": 2}],
                       ["res_x", {"num_layers": 1}], ["compress_all", {"multiplier": 1}],
                       ["res_x", {"num_layers": 1}], ["compress_all", {"multiplier": 2}],
                       ["res_x", {"num_layers": 1}]],
}  # fmt: skip
_AUDIO_DD_23 = {**AUDIO_VAE["model"]["params"]["ddconfig"], "attn_resolutions": [8], "mid_block_add_attention": True}
AUDIO_VAE_23 = {**AUDIO_VAE, "model": {"params": {**AUDIO_VAE["model"]["params"], "ddconfig": _AUDIO_DD_23}}}
VOCODER_23 = {  # BigVGAN at 16 kHz (160 samples per mel frame), then x3 bandwidth extension to 48 kHz
    "vocoder": {"upsample_initial_channel": 16, "resblock": "AMP1", "upsample_rates": [5, 4, 4, 2],
                "resblock_kernel_sizes": [3], "upsample_kernel_sizes": [10, 8, 8, 4],
                "resblock_dilation_sizes": [[1, 3]], "stereo": True, "use_tanh_at_final": False,
                "activation": "snakebeta", "use_bias_at_final": False},
    "bwe": {"upsample_initial_channel": 16, "resblock": "AMP1", "upsample_rates": [4, 4, 6],
            "resblock_kernel_sizes": [3], "upsample_kernel_sizes": [8, 8, 12], "resblock_dilation_sizes": [[1, 3]],
            "stereo": True, "use_tanh_at_final": False, "activation": "snakebeta", "use_bias_at_final": False,
            "apply_final_activation": False, "input_sampling_rate": 16000, "output_sampling_rate": 48000,
            "hop_length": 32, "n_fft": 128, "win_size": 128, "num_mels": 64},
}  # fmt: skip
UPSCALER_23 = "spatial_upscaler_x2_v1_1"
UPSCALER_CONFIG_23 = {"in_channels": 8, "mid_channels": 32, "num_blocks_per_stage": 1, "dims": 3,
                      "spatial_upsample": True, "temporal_upsample": False, "spatial_scale": 2.0,
                      "rational_resampler": False}  # fmt: skip
MODEL_INFO = {
    "model_type": "AudioVideo", "model_version": "2.0.0", "variant": "distilled", "tiny": True,
    "audio_sample_rate": 24000, "audio_latent_sample_rate": 16000, "audio_hop_length": 160,
    "audio_latent_channels": 1, "audio_mel_bins": 16,
}  # fmt: skip
QUANTIZATION = {"bits": 4, "group_size": 64}
VERSIONS = ("2.0", "2.3", "2.5")


def _mlx_spelling(key: str) -> str:
    """Our parameter path -> the key spelling of the MLX conversions (PyTorch module paths)."""
    key = key.replace(".to_out.", ".to_out.0.").replace(".proj_in.", ".net.0.proj.")
    return key.replace(".ff.proj_out.", ".ff.net.2.").replace(".audio_ff.proj_out.", ".audio_ff.net.2.")


def _params(module: nn.Module) -> dict[str, mx.array]:
    return dict(tree_flatten(module.parameters()))


def _torch_layout(array: mx.array) -> mx.array:
    """MLX conv weight (O, *kernel, I) -> PyTorch (O, I, *kernel), as the unified files keep the upsampler."""
    return array.moveaxis(-1, 1) if array.ndim >= 3 else array


def _text_encoder_config() -> dict:
    return json.loads(resources.files("ltx_backend.assets").joinpath(TEXT_ENCODER_ASSETS, "config.json").read_text())


def _sections(version: str) -> dict:
    if version == "2.3":
        return {"transformer": TRANSFORMER_23, "vae": VAE_23, "audio_vae": AUDIO_VAE_23, "vocoder": VOCODER_23}
    return {"transformer": TRANSFORMER, "vae": VAE, "audio_vae": AUDIO_VAE, "vocoder": VOCODER}


def random_lora(
    model: LTXModel, rank: int = 2, seed: int = 0, every: int = 3, scale: float = 0.2
) -> dict[str, mx.array]:
    """A random rank-`rank` LoRA on every `every`-th linear layer of `model` (blocks and the layers outside them),
    keyed ``diffusion_model.<layer>.lora_A/B.weight`` in ltx-core's spelling, as LTX-2 trainer files are: the tiny
    dev release's distilled LoRA, and the tests' LoRA files."""
    from ltx_backend.weights.lora import model_targets, our_layer

    tensors = {}
    key = mx.random.key(seed)
    for index, (ours, target) in enumerate(sorted(model_targets(model).items())):
        name = _mlx_spelling(f"{ours}.weight").removesuffix(".weight")
        if index % every or our_layer(name) != ours:
            continue
        key, a_key, b_key = mx.random.split(key, 3)
        out, inp = target.shape
        tensors[f"diffusion_model.{name}.lora_A.weight"] = mx.random.normal((rank, inp), key=a_key) * scale
        tensors[f"diffusion_model.{name}.lora_B.weight"] = mx.random.normal((out, rank), key=b_key) * scale
    return tensors


def mixed_precision_layer(path: str, module: nn.Module) -> dict[str, int] | bool:
    """The tiny mixed-precision pack's per-layer choice: every bit width MLX supports, two group sizes, q apart
    from k/v (so that only k/v stack) and blocks of two structures (k/v bits alternate between blocks)."""
    if not (isinstance(module, nn.Linear) and path.startswith("transformer_blocks.")):
        return False
    in_features = module.weight.shape[1]
    if in_features % 32:
        return False
    block = int(path.split(".")[1])
    name = path.rsplit(".", 1)[-1]
    bits = {"to_q": 8, "to_k": 4 + 2 * (block % 2), "to_v": 4 + 2 * (block % 2), "to_out": 5, "proj_in": 3}
    chosen = bits.get(name, 2)
    group = 64 if in_features % 64 == 0 and name != "to_out" else 32
    return {"bits": chosen, "group_size": group}


def tiny_components(
    version: str = "2.0",
    seed: int = SEED,
    mixed: bool = False,
    *,
    sections: dict | None = None,
    upsampler: UpsamplerConfig | None = None,
    gemma: Gemma3Config | None = None,
) -> dict[str, dict[str, mx.array]]:
    """component -> its tensors, keyed as the MLX conversions key them inside a component; seeded, random.

    The arrays are lazy (evaluate them to draw the values). `mixed` (2.3 only): the transformer's block linears
    quantized with per-layer bits (``mixed_precision_layer``). `sections`, `upsampler` and `gemma` give other sizes
    (benchmarks write full-size checkpoints with them); by default the tiny ones."""
    if version not in VERSIONS:
        raise ValueError(f"tiny model version must be one of {VERSIONS}, not {version!r}")
    if mixed and version != "2.3":
        raise ValueError("only the 2.3 tiny model has a mixed-precision variant")
    mx.random.seed(seed)
    sections = sections or _sections(version)
    components: dict[str, dict[str, mx.array]] = {}

    transformer = LTXModel(TransformerConfig.from_section(sections["transformer"]))
    if mixed:
        nn.quantize(transformer, class_predicate=mixed_precision_layer)
    elif version == "2.3":
        nn.quantize(transformer, QUANTIZATION["group_size"], QUANTIZATION["bits"], class_predicate=quantizable_layer)
    components["transformer"] = {_mlx_spelling(k): v for k, v in _params(transformer).items()}

    gemma = gemma or Gemma3Config.from_dict(_text_encoder_config())
    config = TextProcessorConfig.from_section(sections["transformer"], gemma.hidden_size, gemma.num_hidden_layers + 1)
    processor = _params(TextEmbeddingsProcessor(config))
    components["text_embedding_projection"] = {
        k.removeprefix("feature_extractor."): v for k, v in processor.items() if k.startswith("feature_extractor.")
    }
    components["connector"] = {
        _mlx_spelling("." + k.replace("_connector.", "_embeddings_connector.", 1))[1:]: v
        for k, v in processor.items()
        if not k.startswith("feature_extractor.")
    }

    vae = VideoVAEConfig.from_config({"vae": sections["vae"]})
    components["vae_decoder"] = _params(VideoDecoder(vae))
    components["vae_encoder"] = _params(VideoEncoder(vae))
    audio = AudioVAEConfig.from_config({"audio_vae": sections["audio_vae"]})
    components["audio_vae"] = {}
    for prefix, module in (("encoder.", AudioEncoder(audio)), ("decoder.", AudioDecoder(audio))):
        for key, value in _params(module).items():  # the statistics are shared: stored once, unprefixed
            components["audio_vae"][key if key.startswith("per_channel_statistics.") else prefix + key] = value
    if version == "2.3":  # MLX conversions drop the inner "vocoder." of the BigVGAN generator
        vocoder = _params(VocoderWithBWE(BWEConfig.from_section(sections["vocoder"])))
        components["vocoder"] = {k.removeprefix("vocoder."): v for k, v in vocoder.items()}
    else:
        components["vocoder"] = _params(Vocoder(VocoderConfig.from_section(sections["vocoder"])))
    components["upsampler"] = _params(LatentUpsampler(upsampler or UPSAMPLER))
    return components


def write_tiny_model(
    path: str | Path, version: str = "2.0", seed: int = SEED, mixed: bool = False, variant: str = "distilled"
) -> Path:
    """Write the tiny checkpoint to ``path`` (replacing it), atomically; returns ``path``.

    2.0: mlx-video-with-audio's unified layout (about 5 MB). 2.3: the split layout of mlx-forge with a 4-bit
    transformer stored as ``transformer-distilled.safetensors`` (`mixed`: per-layer 2-8 bits instead). Both carry the
    tiny Gemma 3 in ``text_encoder/``. 2.5: Lightricks' official split release layout with a tiny Gemma 4 and the
    duration head (``tiny_ltx25.py``); its `variant` ``dev`` is the dev release with its distilled LoRA.
    """
    path = Path(path)
    if variant != "distilled" and version != "2.5":
        raise ValueError("only the 2.5 tiny model has a dev variant")
    if version == "2.5":
        if mixed:
            raise ValueError("only the 2.3 tiny model has a mixed-precision variant")
        from ltx_backend.tiny_ltx25 import write_tiny_ltx25

        with atomic_directory(path) as folder:
            write_tiny_ltx25(folder, seed, variant)
        return path
    components = tiny_components(version, seed, mixed)
    mx.eval(components)
    sections = _sections(version)
    with atomic_directory(path) as folder:
        if version == "2.0":
            _write_unified(folder, components, sections)
        else:
            _write_split(folder, components, sections, mixed)
        _write_text_encoder(folder / "text_encoder", seed)
    return path


def _save(path: Path, tensors: dict[str, mx.array]) -> None:
    mx.save_safetensors(str(path), tensors, metadata={"format": "mlx"})


def _write_unified(folder: Path, components: dict[str, dict[str, mx.array]], sections: dict) -> None:
    weights = {}
    for name, tensors in components.items():
        for key, value in tensors.items():
            weights[f"{name}.{key}"] = _torch_layout(value) if name == "upsampler" else value
    _save(folder / "model.safetensors", weights)
    (folder / "config.json").write_text(json.dumps(MODEL_INFO, indent=2))
    (folder / "embedded_config.json").write_text(json.dumps(sections, indent=2))


def _write_split(folder: Path, components: dict[str, dict[str, mx.array]], sections: dict, mixed: bool) -> None:
    files = {
        "transformer-distilled": components["transformer"],
        "connector": {
            **components["connector"],
            **{f"text_embedding_projection.{k}": v for k, v in components["text_embedding_projection"].items()},
        },
        "vae_decoder": components["vae_decoder"],
        "vae_encoder": components["vae_encoder"],
        "audio_vae": components["audio_vae"],
        "vocoder": components["vocoder"],
        UPSCALER_23: {f"{UPSCALER_23}.{k}": v for k, v in components["upsampler"].items()},
    }
    for name, tensors in files.items():
        _save(folder / f"{name}.safetensors", tensors)
    manifest = {
        "format": "split", "model_version": "2.3.0", "variant": "distilled", "source": "ltx-backend tiny",
        "components": ["transformer", *[name for name in files if not name.startswith("transformer")]],
        "quantized": True, "quantization_bits": QUANTIZATION["bits"],
        "quantization_group_size": QUANTIZATION["group_size"],
    }  # fmt: skip
    if mixed:  # each layer's bits and group size are in its tensor shapes (weights/mixed_quant.py)
        manifest["mixed_precision"] = True
    (folder / "split_model.json").write_text(json.dumps(manifest, indent=2))
    info = {**MODEL_INFO, "model_version": "2.3.0", "audio_sample_rate": 48000}
    (folder / "config.json").write_text(json.dumps(info, indent=2))
    embedded = {**sections, "upscalers": {UPSCALER_23: UPSCALER_CONFIG_23}}
    (folder / "embedded_config.json").write_text(json.dumps(embedded, indent=2))


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
    _save(folder / "model.safetensors", weights)


def tiny_model_dir(version: str = "2.0") -> Path:
    """Where ``--model tiny`` (``tiny-2.3``, ``tiny-2.5``) lives: ``$LTX_BACKEND_HOME/tiny`` (default
    ``~/.cache/ltx-backend``)."""
    home = os.environ.get("LTX_BACKEND_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", "~/.cache"), "ltx-backend"
    )
    return Path(home).expanduser() / (NAME if version == "2.0" else f"{NAME}-{version}")


def ensure_tiny_model(version: str = "2.0") -> Path:
    """The tiny model's directory, written on first use (it takes well under a second)."""
    path = tiny_model_dir(version)
    written = path / ("diffusion_models" if version == "2.5" else "config.json")
    if not written.exists():
        write_tiny_model(path, version)
    return path


def repair_hint(path: str | Path) -> str | None:
    """The fix for a damaged file of a tiny model (it is written locally, never downloaded): None for other paths."""
    path = Path(path).absolute()
    for version in ("2.0", "2.3"):
        if path.is_relative_to(tiny_model_dir(version).absolute()):
            flag = "" if version == "2.0" else " --version 2.3"
            return f"The built-in tiny model is damaged: write it again with `ltx-backend make-tiny{flag}`."
    return None
