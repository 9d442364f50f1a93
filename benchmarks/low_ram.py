"""Low-RAM denoising: the transformer resident vs streamed block by block from disk, on packs written to disk.

    python benchmarks/low_ram.py --workdir /tmp/lowram                       # LTX-2.3 Q4 + mixed, both sizes
    python benchmarks/low_ram.py --tiny --sizes 128x128x9 --workdir /tmp/lr  # CPU smoke run (tiny 2.3 config)

Writes each pack once (random weights of the real shapes, in our split layout: ``split_model.json``,
``embedded_config.json``, ``transformer-distilled.safetensors``): LTX-2.3 Q4 (MLX 4-bit, group 64, the block
linears as the converters choose them; 11.35 GB) and a mixed-precision pack (per-layer 3/4/5/6/8 bits; 12.65 GB:
an allocation in the spirit of the community 12 GB pack, whose real per-layer choice is not public; see
ltx_backend/weights/mixed_quant.py). Then, per pack, size and mode, runs the distilled denoising as the engine
does (stage 1, 8 steps at half size; stage 2, 3 steps at full size; compiled blocks and dequantized large products
on GPUs) with random text contexts, and reports peak MLX memory (beside the memory planner's estimate of the
denoising phase), wall time per stage, and for streaming the bytes read, the read rate on the reader threads and
how long the forward waited for reads.

Modes: ``resident`` (load_transformer), ``streaming`` (load_streamed_transformer; the OS page cache may serve
repeated reads: a machine with RAM to spare), ``streaming-uncached`` (each block's pages are dropped from the page
cache after it is read, with posix_fadvise: every step reads from the disk, as on a 16 GB Mac where the pack
cannot stay cached), ``streaming-half`` (half the blocks, every other one, held once read: what the planner does
where memory is left beside a streamed denoising; the other half read per step, page cache as in ``streaming``).
Prints one JSON document.

``--lora``: every job also fuses a rank-64 LoRA on every block's attention projections and feed-forwards
(benchmarks/lora.py's file, written once beside the pack): resident fuses it on load (``load_s``), streaming fuses
each block's deltas as the block is read (``B @ A`` per layer and read, requantized for quantized layers), so
``denoise_s`` with and without ``--lora`` is the streaming cost of a LoRA.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import struct
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/lora.py

TEXT_TOKENS = 1024
MODES = ("resident", "streaming", "streaming-uncached", "streaming-half")


def section(tiny: bool) -> dict:
    if tiny:
        from ltx_backend.tiny import TRANSFORMER_23

        return dict(TRANSFORMER_23)
    from benchmarks.transformer_forward import section as full_section

    return full_section("2.3")


def q4_layer(path: str, module) -> dict | bool:
    from ltx_backend.weights.transformer import quantizable_layer

    return {"bits": 4, "group_size": 64} if quantizable_layer(path, module) else False


def mixed_layer(path: str, module, num_layers: int) -> dict | bool:
    """~4.1 bits on average: 8-bit outer blocks, 3-bit middle feed-forward inputs, 5/6-bit values and outputs."""
    import mlx.nn as nn

    if not (isinstance(module, nn.Linear) and path.startswith("transformer_blocks.")):
        return False
    in_features = module.weight.shape[1]
    group = 64 if in_features % 64 == 0 else 32 if in_features % 32 == 0 else 0
    if not group:
        return False
    block = int(path.split(".")[1])
    name = path.rsplit(".", 1)[-1]
    if block < 2 or block >= num_layers - 2:
        bits = 8
    elif name == "proj_in":
        bits = 3 if num_layers // 6 <= block < num_layers - num_layers // 6 else 4
    else:
        bits = {"to_v": 5, "to_out": 6}.get(name, 4)
    return {"bits": bits, "group_size": group}


def _bf16_bits(values: np.ndarray) -> np.ndarray:
    return (values.astype(np.float32).view(np.uint32) >> 16).astype(np.uint16)


def write_pack(folder: Path, kind: str, tiny: bool, rng: np.random.Generator) -> dict:
    """Write the pack (skipped when already there); returns its description."""
    import mlx.nn as nn
    from mlx.utils import tree_flatten

    from ltx_backend.models.transformer import LTXModel, TransformerConfig

    cfg = section(tiny)
    model = LTXModel(TransformerConfig.from_section(cfg))  # lazy: only the shapes are used
    layers = cfg["num_layers"]
    if kind == "q4":
        predicate = q4_layer
    elif tiny:  # two blocks: the tiny pack's own mix of every bit width
        from ltx_backend.tiny import mixed_precision_layer as predicate
    else:
        predicate = lambda p, m: mixed_layer(p, m, layers)  # noqa: E731
    nn.quantize(model, class_predicate=predicate)
    params = tree_flatten(model.parameters())
    path = folder / "transformer-distilled.safetensors"
    if not path.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        bits = {p: m.bits for p, m in model.named_modules() if isinstance(m, nn.QuantizedLinear)}
        _write_safetensors(path, params, bits, rng)
        manifest = {"format": "split", "model_version": "2.3.0", "variant": "distilled",
                    "components": ["transformer"], "quantized": True, "quantization_bits": 4,
                    "quantization_group_size": 64, "source": "benchmarks/low_ram.py (random weights)"}  # fmt: skip
        if kind == "mixed":
            manifest["mixed_precision"] = True
        (folder / "split_model.json").write_text(json.dumps(manifest, indent=2))
        (folder / "embedded_config.json").write_text(json.dumps({"transformer": cfg}, indent=2))
    return {"path": str(path), "bytes": path.stat().st_size}


def _write_safetensors(path: Path, params: list, bits: dict[str, int], rng: np.random.Generator) -> None:
    """A safetensors file written tensor by tensor (never the whole pack in memory): random packed weights, scales
    and biases that dequantize to ~N(0, 0.02), float tensors ~N(0, 0.02) in bf16."""
    import mlx.core as mx

    entries, offset = {}, 0
    for key, value in params:
        dtype = "U32" if value.dtype == mx.uint32 else "BF16"
        size = math.prod(value.shape) * (4 if dtype == "U32" else 2)
        entries[key] = {"dtype": dtype, "shape": list(value.shape), "data_offsets": [offset, offset + size]}
        offset += size
    header = json.dumps({"__metadata__": {"format": "mlx"}, **entries}).encode()
    header += b" " * (-len(header) % 8)
    temporary = path.with_suffix(".partial")
    with temporary.open("wb") as handle:
        handle.write(struct.pack("<Q", len(header)) + header)
        for key, value in params:
            shape = tuple(value.shape)
            if value.dtype == mx.uint32:
                data = np.frombuffer(rng.bytes(math.prod(shape) * 4), dtype=np.uint8)
            else:
                layer, _, leaf = key.rpartition(".")
                levels = 2 ** bits.get(layer, 4)
                if leaf == "scales" and layer in bits:  # a weight step of 0.04 / levels: values within +-0.02
                    data = _bf16_bits(np.full(shape, 0.04 / levels, np.float32))
                elif leaf == "biases" and layer in bits:
                    data = _bf16_bits(np.full(shape, -0.02, np.float32))
                else:
                    data = _bf16_bits(rng.standard_normal(shape, dtype=np.float32) * 0.02)
            handle.write(data.tobytes())
        handle.flush()
        os.fsync(handle.fileno())
    temporary.replace(path)


def _evict(path: str) -> None:
    """Drop the file's pages from the OS page cache (Linux; a no-op where posix_fadvise is missing)."""
    if hasattr(os, "posix_fadvise"):
        descriptor = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(descriptor, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(descriptor)


def _uncached(stream) -> None:
    """After each block read, drop that block's pages: every read comes from the disk."""
    if not hasattr(os, "posix_fadvise"):  # macOS: reported as is (its page cache is what it is)
        return
    original = stream._read

    def read(index: int):
        buffers = original(index)
        for param in stream._blocks[index]:
            for _, info in param.parts:
                descriptor = stream._files.get(info.file)
                os.posix_fadvise(descriptor, info.offset, info.nbytes, os.POSIX_FADV_DONTNEED)
        return buffers

    stream._read = read


def run_job(pack: Path, mode: str, size: tuple[int, int, int], rng: np.random.Generator, loras=()) -> dict:
    import mlx.core as mx
    from mlx.utils import tree_flatten

    from ltx_backend.models.quantized_linear import dequantize_large_products
    from ltx_backend.pipeline import memory
    from ltx_backend.pipeline import sampler as s
    from ltx_backend.pipeline.engine import _compile_blocks, _dequantize_large_products
    from ltx_backend.pipeline.request import GenerationRequest, validate
    from ltx_backend.pipeline.schedules import DISTILLED_STAGE_1, DISTILLED_STAGE_2
    from ltx_backend.weights.checkpoint import open_checkpoint
    from ltx_backend.weights.streaming import load_streamed_transformer
    from ltx_backend.weights.transformer import load_transformer

    width, height, frames = size
    dtype = mx.bfloat16 if "gpu" in str(mx.default_device()) else mx.float32
    ckpt = open_checkpoint(pack)
    if mode == "streaming-uncached":
        for path in ckpt.component("transformer").files:
            _evict(str(path))
    mx.clear_cache()
    mx.reset_peak_memory()
    start = time.perf_counter()
    streaming = mode.startswith("streaming")
    if streaming:
        kept = ckpt_blocks(ckpt) // 2 if mode == "streaming-half" else 0
        model = load_streamed_transformer(ckpt, dtype, loras=loras, kept_blocks=kept)
    else:
        model = load_transformer(ckpt, dtype, loras=loras)
    if _dequantize_large_products():
        dequantize_large_products(model)
    # Streaming: the non-block weights only (the block shells' own arrays are never used, so never evaluated).
    loaded = tree_flatten(model.parameters())
    mx.eval([value for key, value in loaded if not (streaming and key.startswith("transformer_blocks."))])
    load_seconds = time.perf_counter() - start
    weights_gb = mx.get_active_memory() / 1e9
    if mode == "streaming-uncached":
        _uncached(model.block_stream)

    c = model.config
    video_context = mx.array(rng.standard_normal((1, TEXT_TOKENS, c.video_dim)), dtype=dtype)
    audio_context = mx.array(rng.standard_normal((1, TEXT_TOKENS, c.audio_dim)), dtype=dtype)
    latent_frames = (frames - 1) // 8 + 1
    audio_frames = s.audio_latent_frames(frames, 24.0)
    mel = 16
    timings = {}
    video = audio = None
    for stage, (scale, sigmas) in enumerate(((2, DISTILLED_STAGE_1), (1, DISTILLED_STAGE_2)), start=1):
        h, w = height // 32 // scale, width // 32 // scale
        noise = mx.array(rng.standard_normal((1, c.in_channels, latent_frames, h, w)), dtype=mx.float32)
        video = s.video_state(noise, 24.0, dtype)
        shape = (1, c.audio_in_channels // mel, audio_frames, mel)
        audio = s.audio_state(mx.array(rng.standard_normal(shape), dtype=mx.float32), dtype)
        stage_inputs = s.StageInputs.build(
            model, video, audio, video_context, audio_context, dtype, compiled=_compile_blocks()
        )
        begin = time.perf_counter()
        video, audio = s.euler_loop(sigmas, video, audio, s.simple_denoiser(stage_inputs))
        timings[f"stage{stage}_s"] = round(time.perf_counter() - begin, 3)
        timings[f"stage{stage}_steps"] = len(sigmas) - 1
    request = validate(GenerationRequest("bench", "/tmp/bench.mp4", width=width, height=height, num_frames=frames))
    kept = len(model.block_stream.keep) if streaming else 0
    estimate = memory.estimate(ckpt, None, request, dtype, streaming=streaming, kept_blocks=kept)
    estimate = estimate.phases["denoising"]
    result = {
        "mode": mode,
        "lora": bool(loras),
        "size": f"{width}x{height}x{frames}",
        "planner_estimate_gb": round(estimate.total / 1e9, 3),
        "load_s": round(load_seconds, 3),
        "weights_gb": round(weights_gb, 3),
        **timings,
        "denoise_s": round(timings["stage1_s"] + timings["stage2_s"], 3),
        "peak_gb": round(mx.get_peak_memory() / 1e9, 3),
        "max_rss_gb": round(
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1e9 if sys.platform == "darwin" else 1e6), 3
        ),
        "finite": bool(mx.all(mx.isfinite(video.latent)).item()),
    }
    stream = model.block_stream
    if stream is not None:
        stats = stream.stats
        steps = timings["stage1_steps"] + timings["stage2_steps"]
        result.update(
            block_gb=round(max(stream.block_bytes) / 1e9, 3),
            read_gb=round(stats.bytes / 1e9, 2),
            read_s=round(stats.seconds, 3),
            read_gb_per_s=round(stats.bytes_per_second / 1e9, 2),
            waited_for_reads_s=round(stats.waited, 3),
            reads_per_block=sorted(set(stats.reads.values())),
            kept_blocks=len(stream.keep),
            steps=steps,
        )
    del model, stage_inputs
    mx.clear_cache()
    return result


def ckpt_blocks(ckpt) -> int:
    """The transformer's number of blocks, from its config."""
    from ltx_backend.models.transformer import TransformerConfig
    from ltx_backend.weights.transformer import transformer_section

    return TransformerConfig.from_section(transformer_section(ckpt)).num_layers


def _lora_for(pack: Path):
    """benchmarks/lora.py's rank-64 LoRA for the pack's transformer, written once beside it."""
    from lora import write_lora

    from ltx_backend.models.transformer import LTXModel, TransformerConfig
    from ltx_backend.weights.checkpoint import open_checkpoint
    from ltx_backend.weights.lora import LoraSpec
    from ltx_backend.weights.transformer import transformer_section

    path = pack.with_name(pack.name + "-lora-r64.safetensors")
    if not path.is_file():
        write_lora(LTXModel(TransformerConfig.from_section(transformer_section(open_checkpoint(pack)))), path)
    return LoraSpec(path, 1.0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", required=True, help="where the packs are written (reused when present)")
    parser.add_argument("--packs", default="q4,mixed")
    parser.add_argument("--sizes", default="768x512x121,512x320x97", help="WIDTHxHEIGHTxFRAMES, comma separated")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--tiny", action="store_true", help="the tiny 2.3 config (a CPU smoke run)")
    parser.add_argument("--no-warmup", action="store_true", help="skip the first (kernel-compiling) job")
    parser.add_argument("--lora", action="store_true", help="fuse a rank-64 LoRA (see the module docstring)")
    args = parser.parse_args(argv)

    import mlx.core as mx

    rng = np.random.default_rng(0)
    sizes = [tuple(int(v) for v in text.split("x")) for text in args.sizes.split(",")]
    modes = args.modes.split(",")
    report = {"device": str(mx.default_device()), "mlx": mx.__version__, "tiny": args.tiny, "packs": {}, "jobs": []}
    for kind in args.packs.split(","):
        folder = Path(args.workdir) / f"{'tiny-' if args.tiny else ''}ltx23-{kind}"
        begin = time.perf_counter()
        report["packs"][kind] = {**write_pack(folder, kind, args.tiny, rng), "write_s": None}
        report["packs"][kind]["write_s"] = round(time.perf_counter() - begin, 1)
        from ltx_backend.weights.checkpoint import open_checkpoint
        from ltx_backend.weights.mixed_quant import bit_histogram
        from ltx_backend.weights.transformer import transformer_quantization

        report["packs"][kind]["bits"] = bit_histogram(transformer_quantization(open_checkpoint(folder)))
        loras = [_lora_for(folder)] if args.lora else []
        if not args.no_warmup:  # CUDA compiles its kernels on first use (tens of seconds): not part of any job
            run_job(folder, "resident", sizes[-1], rng, loras)
        for size in sizes:
            for mode in modes:
                job = run_job(folder, mode, size, rng, loras)
                report["jobs"].append({"pack": kind, **job})
                print(json.dumps(report["jobs"][-1]), file=sys.stderr, flush=True)
    for kind in report["packs"]:
        for size in sizes:
            name = "x".join(map(str, size))
            jobs = {j["mode"]: j for j in report["jobs"] if j["pack"] == kind and j["size"] == name}
            if "resident" in jobs:
                for mode in MODES[1:]:
                    if mode in jobs:
                        ratio = jobs[mode]["denoise_s"] / max(jobs["resident"]["denoise_s"], 1e-9)
                        jobs[mode]["wall_vs_resident"] = round(ratio, 2)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
