"""Video VAE decode benchmark: real-size decoder, random weights, time and peak memory per tiling mode.

    python benchmarks/vae_decode.py                      # 768x512x121 (latent 16x16x24), LTX-2.0, bf16, all modes
    python benchmarks/vae_decode.py --height 128 --width 128 --frames 9 --modes none,64/32/16/8   # a CPU-sized run
    python benchmarks/vae_decode.py --reference           # also ltx-core (PyTorch) in the same run, where importable

Prints one JSON document. Times exclude a warm-up decode; peak memory is MLX's (or torch.cuda's) peak while decoding.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import mlx.core as mx
import numpy as np
from mlx.utils import tree_flatten

from ltx_backend.models.vae_tiling import TilingConfig, decode_tiled, tiling_for
from ltx_backend.models.video_vae import LTX2_VAE_SECTION, VideoDecoder, VideoVAEConfig

# The vae section of the official LTX-2.3 header (its decoder half).
LTX23_VAE_SECTION = {
    **LTX2_VAE_SECTION,
    "spatial_padding_mode": "zeros",
    "decoder_blocks": [
        ["res_x", {"num_layers": 4}], ["compress_space", {"multiplier": 2}], ["res_x", {"num_layers": 6}],
        ["compress_time", {"multiplier": 2}], ["res_x", {"num_layers": 4}], ["compress_all", {"multiplier": 1}],
        ["res_x", {"num_layers": 2}], ["compress_all", {"multiplier": 2}], ["res_x", {"num_layers": 2}],
    ],
}  # fmt: skip
SECTIONS = {"2.0": LTX2_VAE_SECTION, "2.3": LTX23_VAE_SECTION}
MODES = ("none", "auto", "default", "aggressive", "conservative", "spatial", "temporal")


def build_decoder(version: str, dtype: mx.Dtype) -> VideoDecoder:
    decoder = VideoDecoder(VideoVAEConfig.from_config({"vae": SECTIONS[version]}))
    decoder.set_dtype(dtype)
    mx.eval(decoder.parameters())
    return decoder


def parse_tiling(mode: str, height: int, width: int, frames: int) -> TilingConfig | None:
    """A --tiling mode name, or explicit sizes "px/overlap_px/frames/overlap_frames" (0 px or 0 frames: off)."""
    if "/" not in mode:
        return tiling_for(mode, height, width, frames)
    px, px_overlap, f, f_overlap = (int(part) for part in mode.split("/"))
    return TilingConfig(px or None, px_overlap, f or None, f_overlap)


def run_mlx(decoder: VideoDecoder, latent: mx.array, mode: str, height: int, width: int, frames: int) -> dict:
    tiling = parse_tiling(mode, height, width, frames)
    mx.clear_cache()
    mx.reset_peak_memory()
    start = time.perf_counter()
    chunks = 0
    for chunk in decode_tiled(decoder, latent, tiling):
        mx.eval(chunk)
        chunks += 1
    seconds = time.perf_counter() - start
    return {
        "mode": mode,
        "tiling": None if tiling is None else list(tiling.__dict__.values()),
        "chunks": chunks,
        "seconds": round(seconds, 4),
        "peak_gb": round(mx.get_peak_memory() / 1e9, 3),
    }


def run_reference(version: str, latent_np: np.ndarray, repeat: int) -> list[dict]:
    """ltx-core's decoder (PyTorch bf16) at the same size: untiled, and tiled with its default TilingConfig."""
    try:
        import torch
        from ltx_core.model.video_vae.model_configurator import VideoDecoderConfigurator
        from ltx_core.model.video_vae.tiling import TilingConfig
    except ImportError as exc:
        return [{"skipped": f"ltx-core not importable: {exc}"}]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    decoder = VideoDecoderConfigurator.from_config({"vae": SECTIONS[version]}).to(device, torch.bfloat16).eval()
    with torch.no_grad():
        for tensor in decoder.per_channel_statistics.buffers():
            tensor.fill_(1.0)
    latent = torch.from_numpy(latent_np).permute(0, 4, 1, 2, 3).to(device, torch.bfloat16)
    results = []
    for name, tiling in (("none", None), ("ltx-core default", TilingConfig.default())):
        with torch.no_grad():

            def decode(tiling=tiling):
                if tiling is None:
                    return decoder(latent)
                return torch.cat(list(decoder.tiled_decode(latent, tiling)), dim=2)

            decode()  # warm-up
            if device == "cuda":
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            start = time.perf_counter()
            for _ in range(repeat):
                decode()
            if device == "cuda":
                torch.cuda.synchronize()
            seconds = (time.perf_counter() - start) / repeat
        peak = torch.cuda.max_memory_allocated() / 1e9 if device == "cuda" else None
        results.append({"mode": name, "seconds": round(seconds, 4), "peak_gb": peak and round(peak, 3)})
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", choices=sorted(SECTIONS), default="2.0")
    parser.add_argument("--height", type=int, default=512)
    parser.add_argument("--width", type=int, default=768)
    parser.add_argument("--frames", type=int, default=121)
    parser.add_argument("--modes", default=",".join(MODES), help="tiling modes, or px/overlap/frames/overlap sizes")
    parser.add_argument("--dtype", choices=["bfloat16", "float32"], default="bfloat16")
    parser.add_argument("--repeat", type=int, default=1, help="timed runs per mode (the mean is reported)")
    parser.add_argument("--reference", action="store_true", help="also time ltx-core (PyTorch) in the same run")
    args = parser.parse_args()

    dtype = getattr(mx, args.dtype)
    latent_shape = (1, (args.frames - 1) // 8 + 1, args.height // 32, args.width // 32, 128)
    latent_np = np.random.default_rng(0).standard_normal(latent_shape).astype(np.float32)
    latent = mx.array(latent_np).astype(dtype)
    decoder = build_decoder(args.version, dtype)
    modes = args.modes.split(",")

    run_mlx(decoder, latent, modes[0], args.height, args.width, args.frames)  # warm-up (kernels, allocator)
    results = []
    for mode in modes:
        runs = [run_mlx(decoder, latent, mode, args.height, args.width, args.frames) for _ in range(args.repeat)]
        best = dict(runs[-1], seconds=round(sum(r["seconds"] for r in runs) / len(runs), 4))
        results.append(best)
    report = {
        "benchmark": "video VAE decode",
        "model": f"LTX-{args.version} decoder, random weights, {args.dtype}",
        "video": f"{args.width}x{args.height}x{args.frames}",
        "latent": list(latent_shape),
        "device": str(mx.default_device()),
        "machine": platform.machine(),
        "mlx": mx.__version__,
        "parameters": sum(v.size for _, v in tree_flatten(decoder.parameters())),
        "ltx_backend": results,
    }
    if args.reference:
        del decoder
        mx.clear_cache()
        report["ltx_core"] = run_reference(args.version, latent_np, args.repeat)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
