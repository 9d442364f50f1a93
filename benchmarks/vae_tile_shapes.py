"""Where a tile's decode loses against the untiled decode, per output voxel: by tile shape, and stage by stage.

    python benchmarks/vae_tile_shapes.py                 # LTX-2.0 decoder, bf16, the 768x512x121 latent (16x16x24)
    python benchmarks/vae_tile_shapes.py --base-channels 4 --dtype float32 --repeat 1 \
        --shapes 4x4x6,2x3x4 --stages 4x4x6,2x3x4           # CPU-sized: the real architecture at 1/32 width

``vae_decode.py`` showed that a tiled decode's time is its decoder calls (``calls_seconds``), and that a `default`
tile costs ~1.6x the untiled decode per output voxel on an H100. This separates the possible causes:

* ``shapes``: each latent shape (frames x rows x columns) decoded alone, warm, the same shape again and again:
  ``seconds`` (the fastest of ``--repeat``) and ``ns_per_voxel``, with ``vs_untiled`` against the first shape (the
  whole latent). A tile as slow per voxel here is slow in its kernels; one fast here but slow in a tiled decode loses
  to the change of shapes between calls.
* ``stages``: the same decode synchronised after the input convolution, each up block and the output, per stage
  ``ms`` and ``ns_per_voxel`` of that stage's output: which stage's kernels lose at the smaller shape.
* ``sequence``: the `default` tiling's spatial tiles in order, each over the whole time axis and synchronised; set
  beside ``shapes`` it shows what changing shapes between calls costs (a decode in time chunks meets more shapes:
  with too few cuDNN plans cached, rebuilding them cost it 2.5x, benchmarks/README.md, session 12).
* ``after_clear_cache``: the untiled decode warm against right after ``mx.clear_cache()`` (the engine frees the
  transformer and the cache just before the decode): what allocating its buffers anew costs.

Prints one JSON document.
"""

from __future__ import annotations

import argparse
import json
import time

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from vae_decode import build_decoder, tile_latents  # benchmarks/ is on sys.path when a script here runs

from ltx_backend.models.vae_tiling import tile_layout, tiling_for
from ltx_backend.models.video_vae import ResBlockGroup, VideoDecoder

DEFAULT_SHAPES = "16x16x24,8x11x16,8x11x10,8x7x16,8x7x10,8x12x16,8x16x16,8x16x24,16x16x12,16x8x24,4x16x24"


def parse_shapes(text: str) -> list[tuple[int, int, int]]:
    return [tuple(int(n) for n in shape.split("x")) for shape in text.split(",") if shape]


def synced(run) -> float:
    start = time.perf_counter()
    mx.eval(run())
    mx.synchronize()
    return time.perf_counter() - start


def fastest(run, repeat: int) -> float:
    synced(run)  # kernels, plans and buffers for this shape
    return min(synced(run) for _ in range(repeat))


def stage_times(decoder: VideoDecoder, latent: mx.array) -> list[tuple[str, tuple, float]]:
    """The decode (without timestep conditioning) synchronised after each stage: (name, output shape, seconds)."""
    causal = decoder.config.causal_decoder
    stages = [("conv_in", lambda x: decoder.conv_in(decoder.per_channel_statistics.un_normalize(x), causal))]
    for index, block in enumerate(decoder.up_blocks):
        if isinstance(block, ResBlockGroup):
            stages.append((f"{index}:{type(block).__name__}", lambda x, b=block: b(x, causal, None, None)))
        else:
            stages.append((f"{index}:{type(block).__name__}", lambda x, b=block: b(x, causal)))
    stages.append(("conv_out", lambda x: decoder.conv_out(nn.silu(decoder.conv_norm_out(x)), causal)))
    results, x = [], latent
    for name, stage in stages:
        start = time.perf_counter()
        x = stage(x)
        mx.eval(x)
        mx.synchronize()
        results.append((name, tuple(x.shape), time.perf_counter() - start))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", choices=("2.0", "2.3"), default="2.0")
    parser.add_argument("--dtype", choices=["bfloat16", "float32"], default="bfloat16")
    parser.add_argument("--base-channels", type=int, help="narrower decoder (real: 128), e.g. 4 for a CPU-sized run")
    parser.add_argument("--shapes", default=DEFAULT_SHAPES, help="latent FxHxW shapes; the first is the whole latent")
    parser.add_argument("--stages", default="16x16x24,8x11x16", help="shapes to time stage by stage")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    decoder = build_decoder(args.version, getattr(mx, args.dtype), args.base_channels)
    if decoder.config.timestep_conditioning:
        raise SystemExit("a decoder with timestep conditioning needs decode noise: use --version 2.0")
    shapes = parse_shapes(args.shapes)
    whole = shapes[0]
    rng = np.random.default_rng(0)
    latent = mx.array(rng.standard_normal((1, *whole, decoder.config.latent_channels)).astype(np.float32))
    latent = latent.astype(getattr(mx, args.dtype))
    mx.eval(latent)

    def crop(shape: tuple[int, int, int]) -> mx.array:
        return latent[:, : shape[0], : shape[1], : shape[2]]

    by_shape = []
    for shape in shapes:
        seconds = fastest(lambda s=shape: decoder.decode(crop(s)), args.repeat)
        by_shape.append({"latent": "x".join(map(str, shape)), "seconds": round(seconds, 4),
                         "ns_per_voxel": round(seconds / tile_layout(*shape, None).voxels() * 1e9, 3)})  # fmt: skip
    for row in by_shape:
        row["vs_untiled"] = round(row["ns_per_voxel"] / by_shape[0]["ns_per_voxel"], 3)

    stages = {}
    for shape in parse_shapes(args.stages):
        stage_times(decoder, crop(shape))  # warm
        runs = [stage_times(decoder, crop(shape)) for _ in range(args.repeat)]
        stages["x".join(map(str, shape))] = [
            {"stage": name, "shape": list(out_shape), "ms": round(min(run[i][2] for run in runs) * 1e3, 3),
             "ns_per_voxel": round(min(run[i][2] for run in runs) / float(np.prod(out_shape[1:4])) * 1e9, 3)}
            for i, (name, out_shape, _) in enumerate(runs[0])
        ]  # fmt: skip

    frames, height, width = tile_layout(*whole, None).largest  # the video's size in frames and pixels
    layout = tile_layout(*whole, tiling_for("default", height, width, frames))
    tiles = tile_latents(latent, layout)
    mx.eval(tiles)
    sequences = []
    for _ in range(args.repeat + 1):
        sequences.append([round(synced(lambda t=tile: decoder.decode(t)), 4) for tile in tiles])
    clear = []
    for _ in range(args.repeat):
        warm = synced(lambda: decoder.decode(latent))
        mx.clear_cache()
        clear.append({"warm": round(warm, 4), "after_clear_cache": round(synced(lambda: decoder.decode(latent)), 4)})

    print(json.dumps({
        "benchmark": "vae tile shapes", "device": str(mx.default_device()), "version": args.version,
        "dtype": args.dtype, "base_channels": args.base_channels or 128, "shapes": by_shape, "stages": stages,
        "sequence": {"tiles": ["x".join(str(n) for n in (whole[0], r.source.stop - r.source.start,
                                                         c.source.stop - c.source.start))
                               for r in layout.rows for c in layout.cols],
                     "seconds_per_tile": sequences[-1], "total_seconds": [round(sum(s), 4) for s in sequences[1:]]},
        "after_clear_cache": clear,
    }, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
