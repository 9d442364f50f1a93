"""Generation over 1, 2, 4 ranks (GPUs): one DiT forward and whole jobs, speed-up and per-GPU memory.

    python benchmarks/distributed.py forward --ranks 1,2,4                 # LTX-2.0 bf16, 768x512x121 + 1280x704x257
    python benchmarks/distributed.py forward --ranks 1,2 --version 2.3 --quantize 4
    python benchmarks/distributed.py job --ranks 1,2,4 --size 768x512x121   # the whole job through the engine
    python benchmarks/distributed.py job --ranks 1,2 --size 1280x704x257
    python benchmarks/distributed.py job --ranks 1,2,4 --parallel guidance --steps 30   # dev: passes on ranks
    python benchmarks/distributed.py forward --tiny --ranks 1,2             # CPU smoke test (tiny model, ring)

Each configuration starts its own ranks (``ltx_backend.parallel.launch.run_ranks``: one process per rank on this
host, all killed on failure or timeout); ``LTX_DISTRIBUTED_BACKEND=nccl`` selects NCCL between GPUs (one
``CUDA_VISIBLE_DEVICES`` per rank), the default is the ring backend over localhost (CPUs, Macs).

``forward``: the full-size transformer with random weights (every rank the same seed, so the same weights before
splitting), split by tensor parallelism, compiled blocks on GPUs as the engine runs them, one forward over the
stage-2 tokens of each size (768x512x121: 6144 video tokens; 1280x704x257: 29040) and 126 / 267 audio tokens.
``job``: the engine's whole job (text encoding, both stages, upsampling, decoding, MP4) with full-size random
modules (benchmarks/generate.py's loaders) on every rank, rank 0 decoding. Per rank: seconds and peak memory.
Prints one JSON document; ``speedup`` is against the 1-rank run of the same command.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # transformer_forward, generate, text_encode
sys.path.insert(0, str(HERE.parent))

LATENT = {"768x512x121": (16, 16, 24), "1280x704x257": (33, 22, 40)}  # stage-2 latent (frames, rows, columns)
TINY_LATENT = (2, 2, 3)


def _size(text: str) -> tuple[int, int, int]:
    width, height, frames = (int(v) for v in text.lower().split("x"))
    return width, height, frames


def _group():
    import mlx.core as mx

    from ltx_backend.parallel.launch import init_group

    if int(os.environ.get("MLX_WORLD_SIZE", "1")) == 1:
        return mx.distributed.init()  # the singleton group: no communication
    return init_group()


# --- one rank -------------------------------------------------------------------------------------------------


def forward_rank(args: argparse.Namespace) -> dict:
    import mlx.core as mx
    import mlx.nn as nn
    import numpy as np
    from mlx.utils import tree_flatten

    from ltx_backend.models.quantized_linear import dequantize_large_products
    from ltx_backend.models.rope import audio_positions, video_positions
    from ltx_backend.models.transformer import LTXModel, StreamInput, TransformerConfig
    from ltx_backend.parallel.tensor import shard_transformer
    from ltx_backend.pipeline.sampler import IN_FLIGHT, SUBMIT_EVERY_BLOCKS
    from ltx_backend.weights.transformer import quantizable_layer

    group = _group()
    gpu = "gpu" in str(mx.default_device())
    dtype = mx.bfloat16 if gpu else mx.float32
    if args.tiny:
        from ltx_backend.tiny import TRANSFORMER

        cfg = {**TRANSFORMER, "attention_head_dim": 32, "audio_attention_head_dim": 32, "cross_attention_dim": 64,
               "audio_cross_attention_dim": 64}  # fmt: skip
        grids = {"tiny": TINY_LATENT}
    else:
        from transformer_forward import section

        cfg = section(args.version)
        grids = {size: LATENT[size] for size in args.sizes.split(",")}
    mx.random.seed(0)
    model = LTXModel(TransformerConfig.from_section(cfg))
    model.set_dtype(dtype)
    if args.quantize:
        group_size = 32 if args.tiny else 64
        nn.quantize(model, group_size=group_size, bits=args.quantize, class_predicate=quantizable_layer)
    mx.eval(model.parameters())
    model.fuse_projections()
    if args.quantize and getattr(mx, "cuda", None) and mx.cuda.is_available():
        dequantize_large_products(model)
    shard_transformer(model, group)
    mx.eval(model.parameters())
    mx.clear_cache()
    weights_gb = sum(v.nbytes for _, v in tree_flatten(model.parameters())) / 1e9
    rng = np.random.default_rng(0)
    c = model.config
    results = []
    for name, (f, h, w) in grids.items():
        audio_tokens = round((f - 1) * 8 + 1) * 25 // 24 if not args.tiny else 5
        v_rope = model.rope(video_positions(f, h, w, 24.0), "video", dtype)
        a_rope = model.rope(audio_positions(audio_tokens), "audio", dtype)

        def stream(tokens: int, channels: int, width: int, rope) -> StreamInput:
            return StreamInput(
                latent=mx.array(rng.standard_normal((1, tokens, channels)), dtype=dtype),
                timesteps=mx.full((1, 1), 0.9, dtype=dtype),
                sigma=mx.array([0.9], dtype=dtype),
                context=mx.array(rng.standard_normal((1, 1024 if not args.tiny else 6, width)), dtype=dtype),
                context_mask=None,
                rope=rope,
            )

        video = stream(f * h * w, c.in_channels, c.caption_channels or c.video_dim, v_rope)
        audio = stream(audio_tokens, c.audio_in_channels, c.caption_channels or c.audio_dim, a_rope)
        blocks = model.compiled_blocks() if gpu else None

        def forward(video=video, audio=audio, blocks=blocks):
            return model(video, audio, compiled=blocks, eval_every=SUBMIT_EVERY_BLOCKS, in_flight=IN_FLIGHT)

        mx.eval(forward())  # warm-up and tracing
        mx.eval(mx.distributed.all_sum(mx.array([1.0]), group=group))  # every rank starts timing together
        mx.reset_peak_memory()
        start = time.perf_counter()
        for _ in range(args.repeat):
            mx.eval(forward())
        seconds = (time.perf_counter() - start) / args.repeat
        results.append({"size": name, "video_tokens": f * h * w, "audio_tokens": audio_tokens,
                        "seconds": round(seconds, 4), "peak_gb": round(mx.get_peak_memory() / 1e9, 2)})  # fmt: skip
    return {"rank": group.rank(), "weights_gb": round(weights_gb, 2), "results": results}


def job_rank(args: argparse.Namespace) -> dict:
    import mlx.core as mx

    from ltx_backend.parallel.run import RankRole
    from ltx_backend.pipeline import engine as engine_module
    from ltx_backend.pipeline.request import GenerationRequest
    from ltx_backend.tiny import ensure_tiny_model, write_tiny_model

    group = _group()
    mx.random.seed(0)  # the same random modules on every rank
    with tempfile.TemporaryDirectory() as folder:
        if args.tiny:
            model_dir = ensure_tiny_model()
        else:
            from generate import install_random_loaders

            model_dir = write_tiny_model(Path(folder) / "tiny")
            install_random_loaders(model_dir / "text_encoder")
        engine = engine_module.Engine(model_dir, quantize=args.quantize, parallel=RankRole(group, args.parallel))
        if args.parallel == "guidance":
            engine.variant = "dev"  # random weights: the dev sampler (guided passes) over the same modules
        width, height, frames = _size(args.size if not args.tiny else "128x128x9")
        runs = []
        for run in range(args.runs):
            request = GenerationRequest(
                prompt="A red fox trots through fresh snow at dawn; its paws crunch softly while wind hisses.",
                output_path=str(Path(folder) / f"out{run}.mp4"), width=width, height=height, num_frames=frames,
                seed=run, tiling=args.tiling, steps=args.steps if args.parallel == "guidance" else None,
            )  # fmt: skip
            mx.eval(mx.distributed.all_sum(mx.array([1.0]), group=group))
            start = time.perf_counter()
            result = engine.generate(request)
            wall = time.perf_counter() - start
            runs.append({"wall_s": round(wall, 2), "wall_excluding_load_s": round(wall - result.timings["load"], 2),
                         "phases_s": result.timings, "peak_memory_gb": result.peak_memory_gb})  # fmt: skip
    return {"rank": group.rank(), "runs": runs}


# --- the driver -----------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["forward", "job"])
    parser.add_argument("--ranks", default="1,2", help="rank counts to compare, e.g. 1,2,4")
    parser.add_argument("--version", choices=["2.0", "2.3"], default="2.0", help="forward: the architecture")
    parser.add_argument("--sizes", default="768x512x121,1280x704x257", help="forward: " + ", ".join(LATENT))
    parser.add_argument("--size", default="768x512x121", help="job: WIDTHxHEIGHTxFRAMES")
    parser.add_argument("--quantize", type=int, choices=[4, 8], default=None)
    parser.add_argument("--parallel", choices=["tensor", "guidance"], default="tensor", help="job: the split")
    parser.add_argument("--steps", type=int, default=30, help="job --parallel guidance: stage-1 steps")
    parser.add_argument("--tiling", default="auto", help="job: the video decode's tiling")
    parser.add_argument("--repeat", type=int, default=3, help="forward: timed forwards after a warm-up")
    parser.add_argument("--runs", type=int, default=2, help="job: runs (the first warms up); the last counts")
    parser.add_argument("--tiny", action="store_true", help="the tiny model at a tiny size (CPU smoke test)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per configuration")
    parser.add_argument("--rank-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.rank_worker:  # one rank: one JSON line on stdout
        report = forward_rank(args) if args.what == "forward" else job_rank(args)
        print("RESULT " + json.dumps(report), flush=True)
        os._exit(0)  # no teardown of the group (its sockets) at exit

    from ltx_backend.parallel.launch import backend, run_ranks

    command = [sys.executable, str(Path(__file__).resolve()), *sys.argv[1:], "--rank-worker"]
    configurations = []
    for ranks in (int(n) for n in args.ranks.split(",")):
        with tempfile.TemporaryDirectory() as folder:
            done = run_ranks(command, ranks, Path(folder), args.timeout)
        failed = [d for d in done if d.returncode != 0]
        if failed:
            configurations.append({"ranks": ranks, "error": failed[0].stderr[-3000:]})
            continue
        per_rank = [json.loads(d.stdout.split("RESULT ", 1)[1]) for d in done]
        configurations.append({"ranks": ranks, "per_rank": per_rank})
    base = next((c for c in configurations if c["ranks"] == 1 and "per_rank" in c), None)
    for config in configurations:
        if base is None or "per_rank" not in config:
            continue
        if args.what == "forward":
            slowest = [
                max(r["results"][i]["seconds"] for r in config["per_rank"])
                for i in range(len(base["per_rank"][0]["results"]))
            ]
            config["seconds"] = slowest
            config["speedup"] = [
                round(b["seconds"] / s, 2) for b, s in zip(base["per_rank"][0]["results"], slowest, strict=True)
            ]
            config["peak_gb_per_rank"] = [
                [r["results"][i]["peak_gb"] for r in config["per_rank"]] for i in range(len(slowest))
            ]
        else:
            wall = max(r["runs"][-1]["wall_excluding_load_s"] for r in config["per_rank"])
            config["wall_excluding_load_s"] = wall
            config["speedup"] = round(base["per_rank"][0]["runs"][-1]["wall_excluding_load_s"] / wall, 2)
            config["peak_gb_per_rank"] = [r["runs"][-1]["peak_memory_gb"] for r in config["per_rank"]]
    import mlx.core as mx

    print(json.dumps({
        "benchmark": f"distributed {args.what}", "backend": backend(), "device": str(mx.default_device()),
        "mlx": mx.__version__, "version": args.version, "quantize": args.quantize, "parallel": args.parallel,
        "tiny": args.tiny, "configurations": configurations,
        "targets": "forward: >= 1.8x on 2 GPUs at 6144 video tokens; job: <= 2 s on 2 GPUs (768x512x121)",
    }, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
