"""Audio decode benchmark: real-size audio VAE decoder + vocoder (+ bandwidth extension), random weights.

    python benchmarks/audio_decode.py --seconds 5   # LTX-2.0 (HiFi-GAN, 24 kHz) and LTX-2.3 (BigVGAN + BWE, 48 kHz)
    python benchmarks/audio_decode.py --reference   # also ltx-core (PyTorch) in the same run, where importable

With bf16 weights, LTX-2.3 is timed twice: as the engine runs it (the vocoder + BWE in float32, ltx-core 1.2.0) and
with the vocoder + BWE in bf16 (``bwe_in_model_dtype``, ltx-core 1.0.0's way): their ratio is float32's cost.

Prints one JSON document. Times exclude a warm-up run.
"""

from __future__ import annotations

import argparse
import functools
import json
import time

import mlx.core as mx
import numpy as np
from mlx.utils import tree_flatten

from ltx_backend.models.audio_vae import LTX2_AUDIO_VAE_SECTION, AudioDecoder, AudioVAEConfig
from ltx_backend.models.bwe import BWEConfig, VocoderWithBWE
from ltx_backend.models.vocoder import LTX2_VOCODER_SECTION, Vocoder, VocoderConfig

LATENTS_PER_SECOND = 25
# The vocoder section of the official LTX-2.3 header.
LTX23_VOCODER_SECTION = {
    "vocoder": {
        "upsample_initial_channel": 1536, "resblock": "AMP1", "upsample_rates": [5, 2, 2, 2, 2, 2],
        "resblock_kernel_sizes": [3, 7, 11], "upsample_kernel_sizes": [11, 4, 4, 4, 4, 4],
        "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5], [1, 3, 5]], "stereo": True, "use_tanh_at_final": False,
        "activation": "snakebeta", "use_bias_at_final": False,
    },
    "bwe": {
        "upsample_initial_channel": 512, "resblock": "AMP1", "upsample_rates": [6, 5, 2, 2, 2],
        "resblock_kernel_sizes": [3, 7, 11], "upsample_kernel_sizes": [12, 11, 4, 4, 4],
        "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5], [1, 3, 5]], "stereo": True, "use_tanh_at_final": False,
        "activation": "snakebeta", "use_bias_at_final": False, "apply_final_activation": False,
        "input_sampling_rate": 16000, "output_sampling_rate": 48000, "hop_length": 80, "n_fft": 512,
        "win_size": 512, "num_mels": 64,
    },
}  # fmt: skip
VOCODERS = {"2.0": LTX2_VOCODER_SECTION, "2.3": LTX23_VOCODER_SECTION}


def build(version: str, dtype: mx.Dtype) -> tuple[AudioDecoder, Vocoder | VocoderWithBWE]:
    decoder = AudioDecoder(AudioVAEConfig.from_config({}))
    section = VOCODERS[version]
    vocoder = (
        VocoderWithBWE(BWEConfig.from_section(section))
        if "bwe" in section
        else Vocoder(VocoderConfig.from_section(section))
    )
    for module in (decoder, vocoder):
        module.set_dtype(dtype)
        mx.eval(module.parameters())
    return decoder, vocoder


def _bwe_in_model_dtype(vocoder: VocoderWithBWE, mel: mx.array) -> mx.array:
    """ltx-core 1.0.0's way: the vocoder + BWE in the weights' dtype (the engine computes them in float32)."""
    return vocoder.waveform(mel).transpose(0, 2, 1)


def time_mlx(decoder, vocoder, latent: mx.array, repeat: int, vocode=None) -> dict:
    vocode = vocode or vocoder

    def run() -> mx.array:
        wave = vocode(decoder(latent))
        mx.eval(wave)
        return wave

    run()
    mx.clear_cache()
    mx.reset_peak_memory()
    start = time.perf_counter()
    for _ in range(repeat):
        wave = run()
    return {
        "seconds": round((time.perf_counter() - start) / repeat, 4),
        "peak_gb": round(mx.get_peak_memory() / 1e9, 3),
        "samples": wave.shape[-1],
        "sample_rate": vocoder.output_sampling_rate,
    }


def time_reference(version: str, latent_np: np.ndarray, repeat: int) -> dict:
    import sys
    import types

    try:
        import torch

        if "torchaudio" not in sys.modules:  # only the encoder-side preprocessing imports it
            stand_in = types.ModuleType("torchaudio")
            stand_in.transforms, stand_in.functional = types.ModuleType("t"), types.ModuleType("f")
            sys.modules.update({"torchaudio": stand_in, "torchaudio.transforms": stand_in.transforms,
                                "torchaudio.functional": stand_in.functional})  # fmt: skip
        from ltx_core.model.audio_vae.model_configurator import AudioDecoderConfigurator, VocoderConfigurator
    except ImportError as exc:
        return {"skipped": f"ltx-core not importable: {exc}"}
    device = "cuda" if torch.cuda.is_available() else "cpu"
    config = {"audio_vae": LTX2_AUDIO_VAE_SECTION, "vocoder": VOCODERS[version]}
    decoder = AudioDecoderConfigurator.from_config(config).to(device, torch.bfloat16).eval()
    vocoder = VocoderConfigurator.from_config(config).to(device, torch.bfloat16).eval()
    with torch.no_grad():
        for tensor in decoder.per_channel_statistics.buffers():
            tensor.fill_(1.0)
    latent = torch.from_numpy(latent_np).to(device, torch.bfloat16)
    with torch.no_grad():
        vocoder(decoder(latent))
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(repeat):
            vocoder(decoder(latent))
        if device == "cuda":
            torch.cuda.synchronize()
    return {"seconds": round((time.perf_counter() - start) / repeat, 4), "device": device}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0, help="audio length")
    parser.add_argument("--versions", default="2.0,2.3")
    parser.add_argument("--dtype", choices=["bfloat16", "float32"], default="bfloat16")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--reference", action="store_true", help="also time ltx-core (PyTorch) in the same run")
    args = parser.parse_args()

    dtype = getattr(mx, args.dtype)
    frames = int(args.seconds * LATENTS_PER_SECOND) + 1
    latent_np = np.random.default_rng(0).standard_normal((1, 8, frames, 16)).astype(np.float32)
    report = {
        "benchmark": "audio decode",
        "audio_seconds": args.seconds,
        "latent": list(latent_np.shape),
        "device": str(mx.default_device()),
        "mlx": mx.__version__,
        "dtype": args.dtype,
        "results": {},
    }
    for version in args.versions.split(","):
        decoder, vocoder = build(version, dtype)
        params = sum(v.size for module in (decoder, vocoder) for _, v in tree_flatten(module.parameters()))
        result = {
            "parameters": params,
            "ltx_backend": time_mlx(decoder, vocoder, mx.array(latent_np).astype(dtype), args.repeat),
        }
        if isinstance(vocoder, VocoderWithBWE) and dtype != mx.float32:
            latent = mx.array(latent_np).astype(dtype)
            in_model_dtype = functools.partial(_bwe_in_model_dtype, vocoder)
            result["bwe_in_model_dtype"] = time_mlx(decoder, vocoder, latent, args.repeat, in_model_dtype)
            result["float32_bwe_cost"] = round(
                result["ltx_backend"]["seconds"] / result["bwe_in_model_dtype"]["seconds"], 3
            )
        if args.reference:
            result["ltx_core"] = time_reference(version, latent_np, args.repeat)
        report["results"][f"LTX-{version}"] = result
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
