"""Video VAE decode benchmark: real-size decoder, random weights, time and peak memory per tiling mode.

    python benchmarks/vae_decode.py                      # 768x512x121 (latent 16x16x24), LTX-2.0, bf16, all modes
    python benchmarks/vae_decode.py --reference           # also ltx-core (PyTorch) in the same run, where importable
    python benchmarks/vae_decode.py --base-channels 4 --dtype float32 --height 256 --width 384 --frames 57 \
        --modes none,aggressive,128/64/32/8 --progress --repeat 2
                                                         # CPU-sized: the real architecture at 1/32 width

Prints one JSON document. Per mode: ``cold_seconds`` (the first decode at that tile layout in the process: kernel
selection, plans and caches for new shapes included), ``seconds`` / ``min_seconds`` (the mean / fastest of ``--repeat``
decodes after it), ``ratio_to_untiled`` (seconds / the untiled mode's seconds, when ``none`` is among the modes),
``voxel_ratio`` (output voxels the tiles decode, overlaps counted each time, over the video's), ``tiles``,
``calls_seconds`` (the decoder on each spatial tile alone over the whole time axis, synchronised per tile, summed: the
rest of ``seconds`` is what tiling and time chunks add around the calls), ``kernels`` (primitives the decoder calls of
one decode make, about one kernel each: on a GPU each costs host time), ``evals`` / ``async_evals`` (calls of
``mx.eval`` / ``mx.async_eval`` in one decode: host waits and graph submissions), ``peak_gb`` (MLX's peak memory in the
last decode) and ``chunks``. ``--progress`` passes a progress callback, as the engine does; ``--batch 4`` lets a decoder
call take same-shape tiles of up to 4 times the largest tile's voxels (more memory, fewer calls). ``--pad-by gather`` /
``concatenation`` forces how the convolutions pad (the default: one gather on CUDA, concatenations elsewhere).
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import platform
import time

import mlx.core as mx
import numpy as np
from graph_count import graph_primitives  # benchmarks/ is on sys.path when a script here runs
from mlx.utils import tree_flatten

from ltx_backend.models import video_vae
from ltx_backend.models.vae_tiling import TileLayout, TilingConfig, decode_tiled, tile_layout, tiling_for
from ltx_backend.models.video_vae import LTX2_VAE_SECTION, LTX23_VAE_SECTION, VideoDecoder, VideoVAEConfig
from ltx_backend.pipeline.memory import auto_decode_tiling

SECTIONS = {"2.0": LTX2_VAE_SECTION, "2.3": LTX23_VAE_SECTION}
MODES = ("none", "auto", "default", "aggressive", "conservative", "spatial", "temporal")


def vae_section(version: str, base_channels: int | None) -> dict:
    """The decoder config; `base_channels` narrows every layer (the real decoders have 128) keeping its layout."""
    section = SECTIONS[version]
    return section if base_channels is None else {**section, "decoder_base_channels": base_channels}


def build_decoder(version: str, dtype: mx.Dtype, base_channels: int | None = None) -> VideoDecoder:
    decoder = VideoDecoder(VideoVAEConfig.from_config({"vae": vae_section(version, base_channels)}))
    decoder.set_dtype(dtype)
    mx.eval(decoder.parameters())
    return decoder


class EvalCounter:
    """Counts calls of ``mx.eval`` and ``mx.async_eval`` (every module looks them up in ``mlx.core`` at call time)."""

    def __init__(self) -> None:
        self.evals = self.async_evals = 0
        self._eval, self._async_eval = mx.eval, mx.async_eval

    def __enter__(self) -> EvalCounter:
        def counted_eval(*args, **kwargs):
            self.evals += 1
            return self._eval(*args, **kwargs)

        def counted_async_eval(*args, **kwargs):
            self.async_evals += 1
            return self._async_eval(*args, **kwargs)

        mx.eval, mx.async_eval = counted_eval, counted_async_eval
        return self

    def __exit__(self, *exc) -> None:
        mx.eval, mx.async_eval = self._eval, self._async_eval


def parse_tiling(mode: str, height: int, width: int, frames: int) -> TilingConfig | None:
    """A --tiling mode name, explicit sizes "px/overlap_px/frames/overlap_frames" (0 px or 0 frames: off), or a
    label=either of those."""
    return tiling_for(mode.rsplit("=", 1)[-1], height, width, frames)


def run_mlx(
    decoder: VideoDecoder, latent: mx.array, tiling: TilingConfig | None, progress: bool, batch: float | None = None
) -> dict:
    """One decode, every chunk evaluated as the engine's writer would receive it."""
    mx.clear_cache()
    mx.reset_peak_memory()
    hooks = {"progress": lambda fraction: None} if progress else {}
    if batch is not None and tiling is not None:  # batch calls of up to `batch` times the largest tile's voxels
        frames, height, width = tile_layout(*latent.shape[1:4], tiling).largest
        hooks["batch_voxels"] = int(batch * frames * height * width)
    chunks = 0
    with EvalCounter() as counter:
        start = time.perf_counter()
        for chunk in decode_tiled(decoder, latent, tiling, **hooks):
            mx.eval(chunk)
            chunks += 1
        seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "chunks": chunks,
        "evals": counter.evals - chunks,  # the benchmark's own per-chunk eval is not the decode's
        "async_evals": counter.async_evals,
        "peak_gb": round(mx.get_peak_memory() / 1e9, 3),
    }


def tile_latents(latent: mx.array, layout: TileLayout) -> list[mx.array]:
    """Each spatial tile's latent over the whole time axis (a decode in time chunks gives that tile's frames)."""
    return [latent[:, :, r.source, c.source] for r, c in itertools.product(layout.rows, layout.cols)]


def decode_kernels(decoder: VideoDecoder, latent: mx.array, layout: TileLayout) -> int:
    """Primitives (about one kernel each) the decoder calls of one decode make, a call per tile."""
    per_shape: dict[tuple, int] = {}
    total = 0
    for tile in tile_latents(latent, layout):
        if tile.shape not in per_shape:
            per_shape[tile.shape] = graph_primitives(functools.partial(decoder.decode, tile))["total"]
        total += per_shape[tile.shape]
    return total


def calls_seconds(decoder: VideoDecoder, latent: mx.array, layout: TileLayout) -> float:
    """The decoder on each tile's latent alone, waited for tile by tile, summed: the tiled decode's time less this is
    what tiling adds around the decoder calls (slicing, blending, host gaps)."""
    tiles = tile_latents(latent, layout)
    mx.eval(tiles)
    total = 0.0
    for tile in tiles:
        start = time.perf_counter()
        mx.eval(decoder.decode(tile))
        total += time.perf_counter() - start
    return total


def run_mode(decoder: VideoDecoder, latent: mx.array, mode: str, size: tuple[int, int, int], args) -> dict:
    height, width, frames = size
    tiling = parse_tiling(mode, height, width, frames)
    layout, whole = tile_layout(*latent.shape[1:4], tiling), tile_layout(*latent.shape[1:4], None)
    kernels = decode_kernels(decoder, latent, layout)
    cold = run_mlx(decoder, latent, tiling, args.progress, args.batch)
    runs = [run_mlx(decoder, latent, tiling, args.progress, args.batch) for _ in range(args.repeat)]
    return {
        "mode": mode,
        "tiling": None if tiling is None else list(tiling.__dict__.values()),
        "tiles": layout.count,
        "voxel_ratio": round(layout.voxels() / whole.voxels(), 3),
        "cold_seconds": round(cold["seconds"], 4),
        "seconds": round(sum(r["seconds"] for r in runs) / len(runs), 4),
        "min_seconds": round(min(r["seconds"] for r in runs), 4),
        **{key: runs[-1][key] for key in ("evals", "async_evals", "peak_gb", "chunks")},
        "kernels": kernels,
        "calls_seconds": round(calls_seconds(decoder, latent, layout), 4),
    }


def run_reference(version: str, base_channels: int | None, latent_np: np.ndarray, repeat: int) -> list[dict]:
    """ltx-core's decoder (PyTorch bf16) at the same size: untiled, and tiled with its default TilingConfig."""
    try:
        import torch
        from ltx_core.model.video_vae.model_configurator import VideoDecoderConfigurator
        from ltx_core.model.video_vae.tiling import TilingConfig
    except ImportError as exc:
        return [{"skipped": f"ltx-core not importable: {exc}"}]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    decoder = VideoDecoderConfigurator.from_config({"vae": vae_section(version, base_channels)})
    decoder = decoder.to(device, torch.bfloat16).eval()
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
    parser.add_argument("--base-channels", type=int, help="narrower decoder (real: 128), e.g. 16 for a CPU-sized run")
    parser.add_argument("--progress", action="store_true", help="pass a progress callback, as the engine does")
    parser.add_argument(
        "--auto-memory",
        default="",
        help="GB,GB,...: also decode with the tiling the engine's auto picks in that much memory (auto@16GB)",
    )
    parser.add_argument(
        "--pad-by",
        choices=["auto", "gather", "concatenation"],
        default="auto",
        help="how convolutions pad their input (auto: one gather on CUDA, concatenations elsewhere)",
    )
    parser.add_argument(
        "--batch", type=float, help="decoder calls of up to this many times the largest tile's voxels (default 1)"
    )
    args = parser.parse_args()

    if args.pad_by != "auto":
        video_vae.cuda_gpu = lambda: args.pad_by == "gather"  # the padding's only device check
    dtype = getattr(mx, args.dtype)
    latent_shape = (1, (args.frames - 1) // 8 + 1, args.height // 32, args.width // 32, 128)
    latent_np = np.random.default_rng(0).standard_normal(latent_shape).astype(np.float32)
    latent = mx.array(latent_np).astype(dtype)
    decoder = build_decoder(args.version, dtype, args.base_channels)
    size = (args.height, args.width, args.frames)

    run_mlx(decoder, latent[:, :2, :2, :2], None, False)  # process warm-up (device, libraries) at another size
    modes = args.modes.split(",")
    weights = sum(v.nbytes for _, v in tree_flatten(decoder.parameters()))
    params = sum(v.size for _, v in tree_flatten(decoder.parameters()))
    for gb in filter(None, args.auto_memory.split(",")):
        chosen = auto_decode_tiling(weights, params, latent.itemsize, latent_shape[1:4], int(float(gb) * 1e9))
        modes.append(f"auto@{gb}GB={chosen}")
    results = [run_mode(decoder, latent, mode, size, args) for mode in modes]
    untiled = next((r for r in results if r["mode"] == "none"), None)
    for result in results:
        if untiled is not None:
            result["ratio_to_untiled"] = round(result["seconds"] / untiled["seconds"], 2)
            result["cold_ratio_to_untiled"] = round(result["cold_seconds"] / untiled["cold_seconds"], 2)
    report = {
        "benchmark": "video VAE decode",
        "model": f"LTX-{args.version} decoder, random weights, {args.dtype}, base channels {args.base_channels or 128}",
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
        report["ltx_core"] = run_reference(args.version, args.base_channels, latent_np, args.repeat)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
