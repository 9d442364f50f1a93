"""Generate tiny audio reference fixtures from Lightricks' ltx-core (PyTorch).

For two model versions -- ``ltx20`` (audio VAE decoder without mid attention + HiFi-GAN vocoder) and
``ltx23`` (decoder with mid/up-level attention + BigVGAN vocoder with bandwidth extension) -- this
script builds tiny, seeded, random-weight float32 modules with ltx-core's own configurators, runs them
on seeded inputs and writes into ``tests/fixtures/audio/``:

* ``refs.npz``: inputs and reference outputs (float32), keys ``<version>.<name>`` plus ``resampler.*``.
* ``<version>_official/``: Lightricks' single-file checkpoint naming, PyTorch layout, config in metadata.
* ``<version>_unified/``: MLX single-file layout (``model.safetensors`` + ``config.json`` +
  ``embedded_config.json``).
* ``<version>_split/``: MLX split layout (``audio_vae.safetensors``, ``vocoder.safetensors``,
  ``split_model.json`` + the two json files above).

Everything is deterministic; re-running overwrites the fixtures with byte-identical files.
Run from the repository root with the reference venv (PyTorch CPU + ltx-core; torchaudio is stubbed):

    /tmp/ltx-ref-venv/bin/python tests/reference/make_audio_refs.py
"""

from __future__ import annotations

import copy
import functools
import json
import math
import shutil
import sys
import types
from pathlib import Path

import fixture_io  # this folder's shared fixture writers (the script's folder is on sys.path)
import numpy as np
import torch
from torch import nn


def _stub_torchaudio() -> None:
    """ltx_core.model.audio_vae imports torchaudio (only used by AudioProcessor); register a stand-in."""
    torchaudio = types.ModuleType("torchaudio")
    torchaudio.transforms = types.ModuleType("torchaudio.transforms")
    torchaudio.functional = types.ModuleType("torchaudio.functional")
    sys.modules.setdefault("torchaudio", torchaudio)
    sys.modules.setdefault("torchaudio.transforms", torchaudio.transforms)
    sys.modules.setdefault("torchaudio.functional", torchaudio.functional)


_stub_torchaudio()

from ltx_core.model.audio_vae.model_configurator import (  # noqa: E402
    AudioDecoderConfigurator,
    AudioEncoderConfigurator,
    VocoderConfigurator,
)
from ltx_core.model.audio_vae.vocoder import UpSample1d, VocoderWithBWE  # noqa: E402

OUT_DIR = Path(__file__).resolve().parents[1] / "fixtures" / "audio"
VERSIONS = {"ltx20": "2.0.0", "ltx23": "2.3.0"}
SEEDS = {"ltx20": 20, "ltx23": 23}
INPUT_SEED = 1234
# Target RMS of the vocoders' pre-activation output: the final tanh/clamp saturates on at most a few percent of the
# samples (but the ltx23 clamps are still exercised).
TARGET_RMS = 0.45
# The shared fixture writers, bound to this script's output folder and storage dtype.
save_safetensors = functools.partial(fixture_io.save_safetensors, dtype=torch.float32, root=OUT_DIR)
write_json = fixture_io.write_json
save_npz = functools.partial(fixture_io.save_npz, dtype=np.float32)

# ---------------------------------------------------------------------------
# Configs (ltx-core checkpoint "config" metadata layout)
# ---------------------------------------------------------------------------


def _audio_vae_config(with_attention: bool) -> dict:
    return {
        "model": {
            "params": {
                "ddconfig": {
                    "double_z": True,
                    "mel_bins": 64,
                    "z_channels": 1,
                    "resolution": 16,
                    "in_channels": 2,
                    "out_ch": 2,
                    "ch": 16,
                    "ch_mult": [1, 1, 2],
                    "num_res_blocks": 1,
                    "attn_resolutions": [8] if with_attention else [],
                    "dropout": 0.0,
                    "mid_block_add_attention": with_attention,
                    "norm_type": "pixel",
                    "causality_axis": "height",
                },
                "sampling_rate": 16000,
            }
        },
        "preprocessing": {
            "stft": {"filter_length": 1024, "hop_length": 160, "causal": True},
            "mel": {"n_mel_channels": 64},
        },
    }


def _bigvgan_config(upsample_initial_channel: int, rates: list, kernels: list, resblock_kernels: list) -> dict:
    return {
        "upsample_initial_channel": upsample_initial_channel,
        "resblock": "AMP1",
        "upsample_rates": rates,
        "resblock_kernel_sizes": resblock_kernels,
        "upsample_kernel_sizes": kernels,
        "resblock_dilation_sizes": [[1, 3, 5]] * len(resblock_kernels),
        "stereo": True,
        "use_tanh_at_final": False,
        "activation": "snakebeta",
        "use_bias_at_final": False,
    }


def build_config(version: str) -> dict:
    if version == "ltx20":
        vocoder = {
            "resblock": "1",
            "stereo": True,
            "upsample_initial_channel": 32,
            "upsample_rates": [3, 2],
            "upsample_kernel_sizes": [7, 4],
            "resblock_kernel_sizes": [3, 5],
            "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5]],
            "output_sampling_rate": 24000,
        }
        return {"audio_vae": _audio_vae_config(with_attention=False), "vocoder": vocoder}

    bwe = _bigvgan_config(32, [4, 4, 6], [8, 8, 12], [3])
    bwe.update(
        {
            "apply_final_activation": False,
            "input_sampling_rate": 16000,
            "output_sampling_rate": 48000,
            "hop_length": 32,
            "n_fft": 128,
            "win_size": 128,
            "num_mels": 64,
        }
    )
    vocoder = {"vocoder": _bigvgan_config(24, [2, 2], [4, 4], [3, 5]), "bwe": bwe}
    return {"audio_vae": _audio_vae_config(with_attention=True), "vocoder": vocoder}


def mlx_config(version: str) -> dict:
    return {
        "model_type": "AudioVideo",
        "model_version": VERSIONS[version],
        "audio_sample_rate": 24000,
        "audio_latent_sample_rate": 16000,
        "audio_hop_length": 160,
        "audio_latent_channels": 8,
        "audio_mel_bins": 16,
    }


# ---------------------------------------------------------------------------
# Random weights
# ---------------------------------------------------------------------------


def randomize_(module: nn.Module, gen: torch.Generator) -> None:
    """Randomise biases, Snake/SnakeBeta alpha/beta and per-channel statistics (conv weights keep torch init)."""
    with torch.no_grad():
        for name, param in module.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            if leaf == "bias":
                param.copy_(torch.randn(param.shape, generator=gen) * 0.1)
            elif leaf in ("alpha", "beta"):
                param.copy_(torch.randn(param.shape, generator=gen) * 0.3)
        for name, buf in module.named_buffers():
            if name.endswith("mean-of-means"):
                buf.copy_(torch.randn(buf.shape, generator=gen) * 0.5)
            elif name.endswith("std-of-means"):
                buf.copy_(torch.rand(buf.shape, generator=gen) + 0.5)


def slaney_mel_filterbank(sample_rate: int, n_fft: int, n_mels: int) -> np.ndarray:
    """Slaney-style (librosa default) triangular mel filterbank, shape (n_mels, n_fft // 2 + 1)."""
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, math.log(6.4) / 27.0

    def hz_to_mel(hz: np.ndarray) -> np.ndarray:
        hz = np.asarray(hz, dtype=np.float64)
        return np.where(hz >= min_log_hz, min_log_mel + np.log(np.maximum(hz, 1e-10) / min_log_hz) / logstep, hz / f_sp)

    def mel_to_hz(mel: np.ndarray) -> np.ndarray:
        return np.where(mel >= min_log_mel, min_log_hz * np.exp(logstep * (mel - min_log_mel)), f_sp * mel)

    fft_freqs = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)
    hz_pts = mel_to_hz(np.linspace(hz_to_mel(0.0), hz_to_mel(sample_rate / 2), n_mels + 2))
    ramps = hz_pts[:, None] - fft_freqs[None, :]
    fdiff = np.diff(hz_pts)[:, None]
    weights = np.maximum(0.0, np.minimum(-ramps[:-2] / fdiff[:-1], ramps[2:] / fdiff[1:]))
    weights *= (2.0 / (hz_pts[2:] - hz_pts[:-2]))[:, None]
    return weights.astype(np.float32)


def stft_bases(n_fft: int) -> tuple[np.ndarray, np.ndarray]:
    """Hann-windowed real-DFT analysis basis and matching inverse-DFT basis, each (2 * (n_fft//2+1), 1, n_fft)."""
    n = np.arange(n_fft)
    f = np.arange(n_fft // 2 + 1)[:, None]
    window = 0.5 - 0.5 * np.cos(2 * np.pi * n / n_fft)  # periodic Hann
    angle = 2 * np.pi * f * n / n_fft
    forward = np.concatenate([np.cos(angle), -np.sin(angle)]) * window
    scale = np.where((f == 0) | (f == n_fft // 2), 1.0, 2.0) / n_fft
    inverse = np.concatenate([scale * np.cos(angle), -scale * np.sin(angle)]) * window
    return forward[:, None, :].astype(np.float32), inverse[:, None, :].astype(np.float32)


def fill_mel_stft_(vocoder: VocoderWithBWE, bwe_cfg: dict) -> None:
    forward, inverse = stft_bases(bwe_cfg["n_fft"])
    mel_basis = slaney_mel_filterbank(bwe_cfg["input_sampling_rate"], bwe_cfg["n_fft"], bwe_cfg["num_mels"])
    with torch.no_grad():
        vocoder.mel_stft.stft_fn.forward_basis.copy_(torch.from_numpy(forward))
        vocoder.mel_stft.stft_fn.inverse_basis.copy_(torch.from_numpy(inverse))
        vocoder.mel_stft.mel_basis.copy_(torch.from_numpy(mel_basis))


@torch.no_grad()
def calibrate_conv_post_(conv_post: nn.Conv1d, run: nn.Module, inputs: list[torch.Tensor]) -> None:
    """Scale ``conv_post`` so that its output (pre tanh/clamp) has RMS <= TARGET_RMS on every input."""
    captured = []
    handle = conv_post.register_forward_hook(lambda _m, _i, out: captured.append(out))
    for x in inputs:
        run(x)
    handle.remove()
    rms = max(float(out.pow(2).mean().sqrt()) for out in captured)
    conv_post.weight.mul_(TARGET_RMS / rms)
    if conv_post.bias is not None:
        conv_post.bias.mul_(TARGET_RMS / rms)


# ---------------------------------------------------------------------------
# Checkpoint layouts
# ---------------------------------------------------------------------------

MLX_PERMUTATIONS = {nn.Conv1d: (0, 2, 1), nn.ConvTranspose1d: (1, 2, 0), nn.Conv2d: (0, 2, 3, 1)}


def conv_kinds(module: nn.Module) -> dict[str, type]:
    """Map '<module>.weight' state-dict keys of every conv layer to its layer type."""
    return {f"{name}.weight": type(mod) for name, mod in module.named_modules() if type(mod) in MLX_PERMUTATIONS}


def to_mlx(module: nn.Module, keep_torch_transposed: bool = False) -> dict[str, torch.Tensor]:
    """State dict with conv weights in MLX layout (ConvTranspose1d optionally kept as PyTorch (I, O, K))."""
    kinds = conv_kinds(module)
    out = {}
    for key, value in module.state_dict().items():
        kind = kinds.get(key)
        if kind is not None and not (keep_torch_transposed and kind is nn.ConvTranspose1d):
            value = value.permute(*MLX_PERMUTATIONS[kind])
        out[key] = value
    return out


def split_stats(state: dict[str, torch.Tensor]) -> tuple[dict, dict]:
    """Separate per-channel statistics (renamed to the MLX '_mean_of_means' style) from the other tensors."""
    stats, rest = {}, {}
    for key, value in state.items():
        if key.startswith("per_channel_statistics."):
            leaf = key.split(".", 1)[1]
            stats[f"per_channel_statistics._{leaf.replace('-', '_')}"] = value
        else:
            rest[key] = value
    return stats, rest


def official_checkpoint(decoder: nn.Module, encoder: nn.Module, vocoder: nn.Module) -> dict:
    out = {}
    for key, value in decoder.state_dict().items():
        prefix = "audio_vae." if key.startswith("per_channel_statistics.") else "audio_vae.decoder."
        out[prefix + key] = value
    for key, value in encoder.state_dict().items():
        if not key.startswith("per_channel_statistics."):
            out["audio_vae.encoder." + key] = value
    for key, value in vocoder.state_dict().items():
        out["vocoder." + key] = value
    return out


def unified_checkpoint(decoder: nn.Module, vocoder: nn.Module) -> dict:
    stats, dec = split_stats(to_mlx(decoder))
    out = {f"audio_vae.{key}": value for key, value in {**dec, **stats}.items()}
    for key, value in to_mlx(vocoder).items():
        out["vocoder." + key.removeprefix("vocoder.")] = value
    return out


def split_audio_vae(version: str, decoder: nn.Module, encoder: nn.Module) -> dict:
    stats, dec = split_stats(to_mlx(decoder))
    if version == "ltx20":
        return {**dec, **stats}
    _, enc = split_stats(to_mlx(encoder))
    out = {f"decoder.{key}": value for key, value in dec.items()}
    out.update({f"encoder.{key}": value for key, value in enc.items()})
    return {**out, **stats}


def split_vocoder(version: str, vocoder: nn.Module) -> dict:
    out = {}
    for key, value in to_mlx(vocoder, keep_torch_transposed=True).items():
        # mlx-forge variant (ltx23): Activation1d filters (1, 1, K) -> (1, K, 1), STFT bases (F, 1, N) -> (F, N, 1).
        if version == "ltx23" and (key.endswith(".filter") or key.endswith("_basis")) and value.ndim == 3:
            value = value.permute(0, 2, 1)
        out[key.removeprefix("vocoder.")] = value
    return out


# ---------------------------------------------------------------------------
# Models and references
# ---------------------------------------------------------------------------


def build_models(version: str, config: dict) -> tuple[nn.Module, nn.Module, nn.Module]:
    torch.manual_seed(SEEDS[version])  # conv weights: default torch init
    gen = torch.Generator().manual_seed(SEEDS[version])
    decoder = AudioDecoderConfigurator.from_config(copy.deepcopy(config)).float().eval()
    encoder = AudioEncoderConfigurator.from_config(copy.deepcopy(config)).float().eval()
    vocoder = VocoderConfigurator.from_config(copy.deepcopy(config)).float().eval()
    for module in (decoder, encoder, vocoder):
        randomize_(module, gen)
    # Encoder and decoder share one set of statistics in the checkpoints: use the decoder's.
    encoder.per_channel_statistics.load_state_dict(decoder.per_channel_statistics.state_dict())
    if isinstance(vocoder, VocoderWithBWE):
        fill_mel_stft_(vocoder, config["vocoder"]["bwe"])
    return decoder, encoder, vocoder


def pad_to_hop(wave: torch.Tensor, hop_length: int) -> torch.Tensor:
    """Right-pad to a multiple of hop_length, as in VocoderWithBWE.forward."""
    remainder = wave.shape[-1] % hop_length
    return nn.functional.pad(wave, (0, hop_length - remainder)) if remainder else wave


@torch.no_grad()
def make_references(version: str, gen: torch.Generator) -> dict[str, torch.Tensor]:
    config = build_config(version)
    decoder, encoder, vocoder = build_models(version, config)

    latent = torch.randn(1, 1, 5, 16, generator=gen)
    vocoder_in = torch.randn(1, 2, 40, 64, generator=gen)
    encoder_in = torch.randn(1, 2, 17, 64, generator=gen)
    mel = decoder(latent)

    is_bwe = isinstance(vocoder, VocoderWithBWE)
    base = vocoder.vocoder if is_bwe else vocoder
    calibrate_conv_post_(base.conv_post, base, [mel, vocoder_in])
    if is_bwe:
        calibrate_conv_post_(vocoder.bwe_generator.conv_post, vocoder, [mel, vocoder_in])

    refs = {
        "latent": latent,
        "mel": mel,
        "wave": vocoder(mel),
        "vocoder_in": vocoder_in,
        "vocoder_out": vocoder(vocoder_in),
        "encoder_in": encoder_in,
        "encoder_out": encoder(encoder_in),
    }
    if is_bwe:
        refs["base_wave"] = vocoder.vocoder(mel)
        refs["bwe_mel"] = vocoder._compute_mel(pad_to_hop(refs["base_wave"], vocoder.hop_length))
        refs["base_vocoder_out"] = vocoder.vocoder(vocoder_in)
        # Extra: the BWE mels above have a single STFT frame; this one exercises the causal framing (5 frames).
        refs["stft_in"] = torch.randn(1, 2, 5 * vocoder.hop_length, generator=gen) * 0.3
        refs["stft_mel"] = vocoder._compute_mel(refs["stft_in"])

    write_checkpoints(version, config, decoder, encoder, vocoder)
    return {f"{version}.{key}": value for key, value in refs.items()}


def write_checkpoints(version: str, config: dict, decoder: nn.Module, encoder: nn.Module, vocoder: nn.Module) -> None:
    official = OUT_DIR / f"{version}_official"
    unified = OUT_DIR / f"{version}_unified"
    split = OUT_DIR / f"{version}_split"
    for directory in (official, unified, split):
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(parents=True)

    save_safetensors(
        official_checkpoint(decoder, encoder, vocoder),
        official / f"ltx-tiny-{version}.safetensors",
        metadata={"config": json.dumps(config)},
    )

    save_safetensors(unified_checkpoint(decoder, vocoder), unified / "model.safetensors")
    save_safetensors(split_audio_vae(version, decoder, encoder), split / "audio_vae.safetensors")
    save_safetensors(split_vocoder(version, vocoder), split / "vocoder.safetensors")
    for directory in (unified, split):
        write_json(mlx_config(version), directory / "config.json")
        write_json(config, directory / "embedded_config.json")
    write_json(
        {
            "format": "split",
            "model_version": VERSIONS[version],
            "components": ["audio_vae", "vocoder"],
            "source": "tiny",
            "variant": "distilled",
        },
        split / "split_model.json",
    )


@torch.no_grad()
def resampler_references(gen: torch.Generator) -> dict[str, torch.Tensor]:
    resampler = UpSample1d(ratio=3, persistent=False, window_type="hann")
    x = torch.randn(1, 2, 203, generator=gen) * 0.3
    return {"resampler.input": x, "resampler.output": resampler(x), "resampler.filter": resampler.filter.flatten()}


def main() -> None:
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    OUT_DIR.mkdir(parents=True, exist_ok=True)

    gen = torch.Generator().manual_seed(INPUT_SEED)
    refs: dict[str, torch.Tensor] = {}
    for version in VERSIONS:
        print(f"{version}:")
        refs.update(make_references(version, gen))
    refs.update(resampler_references(gen))

    arrays = {key: value.detach().numpy().astype(np.float32) for key, value in refs.items()}
    save_npz(arrays, OUT_DIR / "refs.npz")

    print("refs.npz:")
    for key, array in arrays.items():
        line = f"  {key:28s} {array.shape!s:18s}"
        if "wave" in key or "vocoder_out" in key:
            line += f" |x|>0.99: {np.mean(np.abs(array) > 0.99):.2%}  max|x|: {np.abs(array).max():.3f}"
        print(line)


if __name__ == "__main__":
    main()
