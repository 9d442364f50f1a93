"""Audio decode benchmark: real-size audio VAE decoder + vocoder (+ bandwidth extension), random weights.

    python benchmarks/audio_decode.py --seconds 5   # LTX-2.0 (HiFi-GAN, 24 kHz) and LTX-2.3 (BigVGAN + BWE, 48 kHz)
    python benchmarks/audio_decode.py --reference   # also ltx-core (PyTorch) in the same run, where importable
    python benchmarks/audio_decode.py --versions 2.3 --reference --breakdown   # + per-part times of both

With bf16 weights, LTX-2.3 is timed twice: as the engine runs it (the vocoder + BWE in float32, ltx-core 1.2.0) and
with the vocoder + BWE in bf16 (``bwe_in_model_dtype``, ltx-core 1.0.0's way): their ratio is float32's cost.

``vocoder`` times the vocoder (+ BWE) alone from the same mel, ours and ltx-core's, both computing in the dtype ours
computes in (float32 for LTX-2.3, as ltx-core 1.2.0); on a CUDA GPU also ours with the anti-aliased activations as
compiled MLX ops instead of the fused kernel (``ltx_backend_compiled_activations_seconds``).

``--breakdown`` times each part (convolutions, the transposed upsampling convolutions, the anti-aliased activations,
the BWE's mel STFT and skip resampler) by synchronising after every part, so the parts add up to more than the
unsynchronised total; ``other`` is what lies between them.

A quick check on a CPU (torch in the same process: ``--reference-path`` adds its site-packages to ``sys.path``):

    python benchmarks/audio_decode.py --device cpu --versions 2.3 --seconds 1 --dtype float32 --reference \\
        --breakdown --torch-threads 1,2 --reference-path /tmp/ltx-ref-venv/lib/python3.11/site-packages

Prints one JSON document. Times exclude a warm-up run.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from graph_count import graph_primitives  # benchmarks/ is on sys.path when a script here runs
from mlx.utils import tree_flatten

from ltx_backend.device import cuda_gpu
from ltx_backend.models import bwe as bwe_module
from ltx_backend.models import vocoder as vocoder_module
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


def _mean_seconds(run: Callable[[], object], repeat: int) -> float:
    run()  # warm-up: kernel compilation, allocator
    start = time.perf_counter()
    for _ in range(repeat):
        run()
    return round((time.perf_counter() - start) / repeat, 4)


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


class PartTimer:
    """Per-part wall time: patches a module class's call to synchronise and time it. A part called inside another
    timed part counts towards the outer one."""

    def __init__(self, sync: Callable[[object], None]) -> None:
        self.sync = sync
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.gflop: dict[str, float] = defaultdict(float)
        self._inside = False

    @contextlib.contextmanager
    def patch(self, owner: type | None, method: str, part: Callable[..., str], gflop=None) -> Iterator[None]:
        """Time ``owner.method``; ``part(module, *args)`` names the part, ``gflop(module, out, *args)`` counts it.
        An owner that is None or lacks the method (another version of either code base) is left out."""
        if owner is None or not hasattr(owner, method):
            yield
            return
        original = getattr(owner, method)
        timer = self

        @functools.wraps(original)
        def timed(module, *args, **kwargs):
            if timer._inside:
                return original(module, *args, **kwargs)
            timer._inside = True
            try:
                start = time.perf_counter()
                out = original(module, *args, **kwargs)
                timer.sync(out)
                name = part(module, *args)
                timer.seconds[name] += time.perf_counter() - start
                timer.calls[name] += 1
                if gflop is not None:
                    timer.gflop[name] += gflop(module, out, *args)
            finally:
                timer._inside = False
            return out

        setattr(owner, method, timed)
        try:
            yield
        finally:
            setattr(owner, method, original)

    def report(self, total: float) -> dict:
        parts = {
            name: {"seconds": round(s, 4), "calls": self.calls[name]}
            | ({"gflop": round(self.gflop[name], 2)} if name in self.gflop else {})
            for name, s in sorted(self.seconds.items(), key=lambda item: -item[1])
        }
        parts["other"] = {"seconds": round(total - sum(self.seconds.values()), 4)}
        return {"synchronised_total_seconds": round(total, 4), "parts": parts}


def _mlx_conv_part(conv: nn.Conv1d, x: mx.array) -> str:
    return "conv (dilated)" if conv.dilation > 1 else "conv"


def _mlx_conv_gflop(conv: nn.Module, out: mx.array, x: mx.array) -> float:
    """Useful multiply-adds x 2: a transposed convolution counts its input length, not its zero-stuffed one."""
    out_channels, taps, in_channels = conv.weight.shape
    positions = x.shape[1] if isinstance(conv, nn.ConvTranspose1d) else out.shape[1]
    return 2 * x.shape[0] * positions * out_channels * in_channels * taps / 1e9


def breakdown_mlx(vocoder: Vocoder | VocoderWithBWE, mel: mx.array) -> dict:
    """Per-part times of our vocoder (+ BWE) on ``mel``, each part synchronised."""
    timer = PartTimer(mx.eval)
    patches = [
        (nn.Conv1d, "__call__", _mlx_conv_part, _mlx_conv_gflop),
        (getattr(vocoder_module, "DilatedConv1d", None), "__call__", _mlx_conv_part, _mlx_conv_gflop),
        (nn.ConvTranspose1d, "__call__", lambda *_: "conv_transpose (ups)", _mlx_conv_gflop),
        (
            getattr(vocoder_module, "UpsampleConv1d", None),
            "__call__",
            lambda *_: "conv_transpose (ups)",
            _mlx_conv_gflop,
        ),
        (vocoder_module.Activation1d, "__call__", lambda *_: "anti-aliased snake (Activation1d)", None),
        (bwe_module.MelSTFT, "__call__", lambda *_: "BWE mel STFT", None),
        (bwe_module.VocoderWithBWE, "resample", lambda *_: "BWE skip resampler", None),
    ]
    with contextlib.ExitStack() as stack:
        for owner, method, part, gflop in patches:
            stack.enter_context(timer.patch(owner, method, part, gflop))
        mx.eval(vocoder(mel))  # warm-up (compilation) under the same patches
        timer.seconds.clear(), timer.calls.clear(), timer.gflop.clear()
        start = time.perf_counter()
        mx.eval(vocoder(mel))
        total = time.perf_counter() - start
    return timer.report(total)


def _import_ltx_core():
    """ltx-core's audio modules, with a stand-in for torchaudio (only its encoder-side preprocessing imports it)."""
    import types

    import torch

    if "torchaudio" not in sys.modules:
        stand_in = types.ModuleType("torchaudio")
        stand_in.transforms, stand_in.functional = types.ModuleType("t"), types.ModuleType("f")
        sys.modules.update({"torchaudio": stand_in, "torchaudio.transforms": stand_in.transforms,
                            "torchaudio.functional": stand_in.functional})  # fmt: skip
    from ltx_core.model.audio_vae import vocoder as core_vocoder
    from ltx_core.model.audio_vae.model_configurator import AudioDecoderConfigurator, VocoderConfigurator

    return torch, core_vocoder, AudioDecoderConfigurator, VocoderConfigurator


def _torch_conv_gflop(conv, out, x) -> float:
    import torch

    taps = conv.weight.shape[-1]
    if isinstance(conv, torch.nn.ConvTranspose1d):
        return 2 * x.shape[0] * x.shape[-1] * conv.in_channels * conv.out_channels * taps / conv.groups / 1e9
    return 2 * out.shape[0] * out.shape[-1] * conv.out_channels * conv.in_channels * taps / conv.groups / 1e9


def time_reference(version: str, latent_np: np.ndarray, mel_np: np.ndarray, args, threads: int | None) -> dict:
    try:
        torch, core_vocoder, AudioDecoderConfigurator, VocoderConfigurator = _import_ltx_core()
    except ImportError as exc:
        return {"skipped": f"ltx-core not importable: {exc}"}
    if threads:
        torch.set_num_threads(threads)
    device = "cuda" if torch.cuda.is_available() and args.device != "cpu" else "cpu"
    dtype = getattr(torch, args.dtype)
    config = {"audio_vae": LTX2_AUDIO_VAE_SECTION, "vocoder": VOCODERS[version]}
    decoder = AudioDecoderConfigurator.from_config(config).to(device, dtype).eval()
    vocoder = VocoderConfigurator.from_config(config).to(device, dtype).eval()
    with torch.no_grad():
        for tensor in decoder.per_channel_statistics.buffers():
            tensor.fill_(1.0)
    latent = torch.from_numpy(latent_np).to(device, dtype)

    def sync(_=None) -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    def timed(run: Callable[[], object]) -> float:
        return _mean_seconds(lambda: (run(), sync()), args.repeat)

    result: dict = {"device": device, "threads": torch.get_num_threads()}
    with torch.no_grad():
        result["seconds"] = timed(lambda: vocoder(decoder(latent)))
        # The vocoder (+ BWE) alone, in the dtype ours computes in (ltx-core 1.2.0: VocoderWithBWE in float32).
        compute = torch.float32 if isinstance(vocoder, core_vocoder.VocoderWithBWE) else dtype
        vocoder = vocoder.to(compute)
        mel = torch.from_numpy(mel_np).to(device, compute)
        result["audio_vae_decoder_seconds"] = timed(lambda: decoder(latent))
        result["vocoder_seconds"] = timed(lambda: vocoder(mel))
        result["vocoder_dtype"] = str(compute).removeprefix("torch.")
        if args.breakdown:
            result["breakdown"] = _breakdown_torch(torch, core_vocoder, vocoder, mel, sync)
    return result


def _breakdown_torch(torch, core_vocoder, vocoder, mel, sync) -> dict:
    timer = PartTimer(sync)

    def conv_part(conv, x) -> str:
        return "conv (dilated)" if conv.dilation[0] > 1 else "conv"

    patches = [
        (torch.nn.Conv1d, "forward", conv_part, _torch_conv_gflop),
        (torch.nn.ConvTranspose1d, "forward", lambda *_: "conv_transpose (ups)", _torch_conv_gflop),
        (getattr(core_vocoder, "Activation1d", None), "forward", lambda *_: "anti-aliased snake (Activation1d)", None),
        (getattr(core_vocoder, "MelSTFT", None), "mel_spectrogram", lambda *_: "BWE mel STFT", None),
        (getattr(core_vocoder, "UpSample1d", None), "forward", lambda *_: "BWE skip resampler", None),  # not nested
    ]
    with contextlib.ExitStack() as stack:
        for owner, method, part, gflop in patches:
            stack.enter_context(timer.patch(owner, method, part, gflop))
        vocoder(mel), sync()
        timer.seconds.clear(), timer.calls.clear(), timer.gflop.clear()
        start = time.perf_counter()
        vocoder(mel)
        sync()
        total = time.perf_counter() - start
    return timer.report(total)


@contextlib.contextmanager
def _compiled_activations() -> Iterator[None]:
    """The anti-aliased activations as compiled MLX ops instead of the fused CUDA kernel (its only device check)."""
    vocoder_module.cuda_gpu = lambda: False
    try:
        yield
    finally:
        vocoder_module.cuda_gpu = cuda_gpu


def vocoder_compute_dtype(vocoder: Vocoder | VocoderWithBWE, dtype: mx.Dtype) -> mx.Dtype:
    return mx.float32 if isinstance(vocoder, VocoderWithBWE) else dtype


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0, help="audio length")
    parser.add_argument("--versions", default="2.0,2.3")
    parser.add_argument("--dtype", choices=["bfloat16", "float32"], default="bfloat16")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--device", choices=["default", "cpu", "gpu"], default="default", help="MLX (and torch) device")
    parser.add_argument("--reference", action="store_true", help="also time ltx-core (PyTorch) in the same run")
    parser.add_argument("--breakdown", action="store_true", help="per-part times of the vocoder (+ BWE)")
    parser.add_argument("--torch-threads", default="", help="comma-separated torch.set_num_threads values to time")
    parser.add_argument("--reference-path", default="", help="a site-packages holding torch + ltx-core (appended)")
    args = parser.parse_args()
    if args.reference_path:
        sys.path.append(args.reference_path)
    if args.device != "default":
        mx.set_default_device(getattr(mx, args.device))

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
        latent = mx.array(latent_np).astype(dtype)
        result = {"parameters": params, "ltx_backend": time_mlx(decoder, vocoder, latent, args.repeat)}
        if isinstance(vocoder, VocoderWithBWE) and dtype != mx.float32:
            in_model_dtype = functools.partial(_bwe_in_model_dtype, vocoder)
            result["bwe_in_model_dtype"] = time_mlx(decoder, vocoder, latent, args.repeat, in_model_dtype)
            result["float32_bwe_cost"] = round(
                result["ltx_backend"]["seconds"] / result["bwe_in_model_dtype"]["seconds"], 3
            )
        mel = decoder(latent)
        mx.eval(mel)
        mel_np = np.array(mel.astype(mx.float32))
        mel_in = mel.astype(vocoder_compute_dtype(vocoder, dtype))
        result["vocoder"] = {
            "mel": list(mel.shape),
            "ltx_backend_seconds": _mean_seconds(lambda: mx.eval(vocoder(mel_in)), args.repeat),  # noqa: B023
            "ltx_backend_audio_vae_decoder_seconds": _mean_seconds(lambda: mx.eval(decoder(latent)), args.repeat),  # noqa: B023
        }
        if vocoder_module.cuda_gpu():  # the fused activation kernel's gain, in the same run
            with _compiled_activations():
                vocode = _mean_seconds(lambda: mx.eval(vocoder(mel_in)), args.repeat)  # noqa: B023
            result["vocoder"]["ltx_backend_compiled_activations_seconds"] = vocode
        if args.breakdown:
            result["vocoder"]["ltx_backend_breakdown"] = breakdown_mlx(vocoder, mel_in)
            result["vocoder"]["ltx_backend_primitives"] = graph_primitives(functools.partial(vocoder, mel_in))
        if args.reference:
            threads = [int(t) for t in args.torch_threads.split(",") if t] or [None]
            runs = [time_reference(version, latent_np, mel_np, args, t) for t in threads]
            result["ltx_core"] = runs[0] if len(runs) == 1 else runs
            first = runs[0]
            if "vocoder_seconds" in first:
                result["vocoder"]["ltx_core_seconds"] = first["vocoder_seconds"]
                result["vocoder"]["ltx_core_audio_vae_decoder_seconds"] = first["audio_vae_decoder_seconds"]
                result["vocoder"]["ours_over_ltx_core"] = round(
                    result["vocoder"]["ltx_backend_seconds"] / first["vocoder_seconds"], 3
                )
        report["results"][f"LTX-{version}"] = result
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
