"""LoRA on the full-size transformer (random weights): load + fuse time, memory, and the forward with and without.

    python benchmarks/lora.py                          # LTX-2.3, bf16 and Q4, a rank-64 LoRA, 1536 video tokens
    python benchmarks/lora.py --tiny --repeat 1        # a 2-block, 128-wide model: the CPU smoke run (minutes)

A rank-64 LoRA on every attention projection and feed-forward of every block (what LTX trainers target; 48 blocks x
28 layers) is written to disk in ltx-core's spelling (bf16). For each precision the benchmark measures

* ``check_s``: reading the LoRA header and matching it against the model (what validation costs before compute);
* ``fuse_s``: reading the tensors and fusing them (bf16: ``W + sum s B A``; Q4: dequantize, fuse, requantize the
  touched rows), every layer evaluated; ``fuse_peak_gb`` above the model;
* the DiT forward (compiled blocks, as the engine runs it) of the model without the LoRA, with it fused (must take
  the same time: same shapes, same kernels), and with the LoRA as a low-rank side path instead (``x W^T + s (x A^T)
  B^T`` per layer, q/k/v not stacked since the wrapper has no stacked form; compared with the unstacked forward
  without a LoRA) -- the alternative the fused design avoids: its extra time per forward and the LoRA's resident
  bytes.

Prints one JSON document.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from transformer_forward import engine_inputs, section

RANK = 64
TINY = {"num_layers": 2, "num_attention_heads": 2, "attention_head_dim": 64, "cross_attention_dim": 128,
        "caption_channels": 128, "audio_num_attention_heads": 2, "audio_attention_head_dim": 32,
        "audio_cross_attention_dim": 64}  # fmt: skip


def build(version: str, tiny: bool, quantize: int | None):
    import mlx.core as mx
    import mlx.nn as nn

    from ltx_backend.models.transformer import LTXModel, TransformerConfig
    from ltx_backend.weights.transformer import quantizable_layer

    cfg = {**section(version), **(TINY if tiny else {})}
    model = LTXModel(TransformerConfig.from_section(cfg))
    model.set_dtype(mx.bfloat16)
    if quantize:
        nn.quantize(model, group_size=64, bits=quantize, class_predicate=quantizable_layer)
    mx.eval(model.parameters())
    return model


def write_lora(model, path: Path) -> tuple[int, int]:
    """A rank-64 LoRA on every block's attention projections and feed-forwards; returns (layers, bytes)."""
    import mlx.core as mx

    from ltx_backend.weights.lora import model_targets

    tensors = {}
    key = mx.random.key(16)
    for ours, target in model_targets(model).items():
        if not ours.startswith("transformer_blocks.") or ours.endswith("to_gate_logits"):
            continue
        ltx = (
            ours.replace(".to_out", ".to_out.0")
            .replace("ff.proj_in", "ff.net.0.proj")
            .replace("ff.proj_out", "ff.net.2")
        )
        out, inp = target.shape
        key, a, b = mx.random.split(key, 3)
        tensors[f"diffusion_model.{ltx}.lora_A.weight"] = (mx.random.normal((RANK, inp), key=a) * 0.01).astype(
            mx.bfloat16
        )
        tensors[f"diffusion_model.{ltx}.lora_B.weight"] = (mx.random.normal((out, RANK), key=b) * 0.01).astype(
            mx.bfloat16
        )
    mx.save_safetensors(str(path), tensors)
    return len(tensors) // 2, path.stat().st_size


class SidePath:
    """A low-rank side path around one linear layer: ``layer(x) + strength * (x A^T) B^T``."""

    @staticmethod
    def wrap(model, lora_path: Path, strength: float) -> int:
        import mlx.core as mx
        import mlx.nn as nn

        from ltx_backend.weights.lora import LoraSpec, check_loras

        class LoraLinear(nn.Module):
            def __init__(self, base: nn.Module, down: mx.array, up: mx.array) -> None:
                super().__init__()
                self.base, self.down, self.up = base, down, up * strength

            def __call__(self, x: mx.array) -> mx.array:
                return self.base(x) + (x @ self.down.T) @ self.up.T

        ((lora, matched),) = check_loras(model, [LoraSpec(lora_path, strength)])
        modules = dict(model.named_modules())
        for m in matched:
            parent, _, name = m.target.module.rpartition(".")
            down, up = lora.file.array(m.pair.down), lora.file.array(m.pair.up)
            setattr(modules[parent], name, LoraLinear(modules[m.target.module], down, up))
        mx.eval(model.parameters())
        return len(matched)


def forward_seconds(model, count: int, repeat: int, compiled: bool) -> float:
    import mlx.core as mx

    from ltx_backend.pipeline.sampler import IN_FLIGHT, SUBMIT_EVERY_BLOCKS

    video, audio = engine_inputs(model, count, np.random.default_rng(0))
    blocks = model.compiled_blocks() if compiled else None

    def forward():
        return model(video, audio, compiled=blocks, eval_every=SUBMIT_EVERY_BLOCKS, in_flight=IN_FLIGHT)

    mx.eval(forward())
    start = time.perf_counter()
    for _ in range(repeat):
        mx.eval(forward())
    return (time.perf_counter() - start) / repeat


def _engine_layers(model, quantize: int | None) -> None:
    """Quantized layers as the engine runs them on CUDA (large products through the dequantized weights)."""
    import mlx.core as mx

    from ltx_backend.models.quantized_linear import dequantize_large_products

    if quantize and getattr(mx, "cuda", None) and mx.cuda.is_available():
        dequantize_large_products(model)


def run(version: str, tiny: bool, quantize: int | None, tokens: list[int], repeat: int, folder: Path) -> dict:
    """One model at a time (a full-size bf16 model is ~40 GB): fused, then without a LoRA, then the side path."""
    import gc

    import mlx.core as mx

    from ltx_backend.weights.lora import LoraSpec, apply_loras, check_loras

    model = build(version, tiny, quantize)
    lora_path = folder / "lora.safetensors"
    if not lora_path.exists():
        write_lora(model, lora_path)
    spec = [LoraSpec(lora_path, 0.8)]
    row: dict = {"quantize": quantize, "lora_mb": round(lora_path.stat().st_size / 1e6, 1)}

    start = time.perf_counter()
    ((_, matched),) = check_loras(model, spec)
    row["check_s"] = round(time.perf_counter() - start, 4)
    row["layers"] = len(matched)
    base = mx.get_active_memory()
    mx.reset_peak_memory()
    start = time.perf_counter()
    apply_loras(model, spec)
    row["fuse_s"] = round(time.perf_counter() - start, 3)
    row["fuse_peak_gb"] = round((mx.get_peak_memory() - base) / 1e9, 3)

    def measure(model, name: str, stacked: bool) -> None:
        _engine_layers(model, quantize)
        for count, result in zip(tokens, rows, strict=True):
            result[name + "_eager_unstacked_s"] = round(forward_seconds(model, count, repeat, compiled=False), 4)
        if stacked:
            model.fuse_projections()
            for count, result in zip(tokens, rows, strict=True):
                result[name + "_s"] = round(forward_seconds(model, count, repeat, compiled=True), 4)

    rows = [{"video_tokens": count} for count in tokens]
    measure(model, "fused", stacked=True)
    del model
    gc.collect()
    mx.clear_cache()
    plain = build(version, tiny, quantize)
    measure(plain, "no_lora", stacked=True)
    del plain
    gc.collect()
    mx.clear_cache()
    side = build(version, tiny, quantize)
    _engine_layers(side, quantize)
    SidePath.wrap(side, lora_path, 0.8)
    measure(side, "side_path", stacked=False)
    row["side_path_resident_mb"] = row["lora_mb"]
    row["forward"] = rows
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", choices=["2.0", "2.3"], default="2.3")
    parser.add_argument("--tiny", action="store_true", help="2 blocks, 128 wide (CPU smoke run)")
    parser.add_argument("--tokens", default="1536", help="video token counts (1536 and/or 6144)")
    parser.add_argument("--precisions", default="bf16,4", help="bf16 and/or 4 / 8 (quantized bits)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    import mlx.core as mx

    tokens = [int(t) for t in args.tokens.split(",")]
    report = {"benchmark": "lora", "model": f"LTX-{args.version}" + (" tiny" if args.tiny else "") + ", random",
              "rank": RANK, "device": str(mx.default_device()), "mlx": mx.__version__, "results": []}  # fmt: skip
    with tempfile.TemporaryDirectory() as folder:
        for precision in args.precisions.split(","):
            quantize = None if precision == "bf16" else int(precision)
            report["results"].append(run(args.version, args.tiny, quantize, tokens, args.repeat, Path(folder)))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
