"""Where one full-size LTX-2.0 transformer block spends its time (random bf16 weights): the parts, then the block.

    python benchmarks/transformer_profile.py               # stage-2 shapes: 6144 video, 126 audio, 1024 text tokens
    python benchmarks/transformer_profile.py --video 1536  # stage-1 shapes

Times the matrix products at the block's shapes (with TFLOP/s), the four attentions (``mx.fast``
scaled_dot_product_attention, fed as the block feeds it; with the scratch memory each needs against its score
matrix, which tells a fused kernel from a materialising fallback), RoPE and the norms, then one block eager and through
``CompiledBlocks``; ``x48`` is what 48 such blocks cost. ``primitives`` counts the kernels of the compiled block's
graph by kind (views left out; ``Split`` makes views too). Not in the graph: RMSNorm copies an input whose rows are
not contiguous (q and k split from a fused projection) before normalising it; ``elementwise_ms`` times that case.
Prints one JSON document.
"""

from __future__ import annotations

import argparse
import io
import json
import re
import time
from collections import defaultdict
from collections.abc import Callable

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from transformer_forward import AUDIO_TOKENS, TEXT_TOKENS, VIDEO_GRIDS, engine_inputs, section  # on sys.path

from ltx_backend.models.rope import apply_rotary, video_positions
from ltx_backend.models.transformer import LTXModel, TransformerConfig


def seconds(fn: Callable[[], object], repeat: int = 20) -> float:
    mx.eval(fn())
    start = time.perf_counter()
    for _ in range(repeat):
        mx.eval(fn())
    return (time.perf_counter() - start) / repeat


def matmuls(tokens: int, dim: int) -> dict:
    """Linear layers of the video stream (with bias, as nn.Linear runs them)."""
    out = {}
    for name, (m, k, n) in {
        "q/k/v/out 4096->4096": (tokens, dim, dim),
        "fused qkv 4096->12288": (tokens, dim, 3 * dim),
        "ff in 4096->16384": (tokens, dim, 4 * dim),
        "ff out 16384->4096": (tokens, 4 * dim, dim),
        "text k/v 1024 tokens": (TEXT_TOKENS, dim, dim),
    }.items():
        layer = nn.Linear(k, n)
        layer.set_dtype(mx.bfloat16)
        x = mx.random.normal((1, m, k)).astype(mx.bfloat16)
        mx.eval(layer.parameters(), x)
        t = seconds(lambda layer=layer, x=x: layer(x))
        out[name] = {"ms": round(t * 1e3, 3), "tflop_per_s": round(2 * m * k * n / t / 1e12, 1)}
    return out


def attentions(tokens: int) -> dict:
    def qkv(q_len: int, kv_len: int, heads: int, head_dim: int, transposed: bool) -> tuple:
        arrays = []
        for length in (q_len, kv_len, kv_len):
            a = mx.random.normal((1, length, heads, head_dim)).astype(mx.bfloat16)
            arrays.append(a.transpose(0, 2, 1, 3) if transposed else mx.contiguous(a.transpose(0, 2, 1, 3)))
        mx.eval(arrays)
        return arrays

    out = {}
    for name, (q_len, kv_len, heads, head_dim) in {
        "video self": (tokens, tokens, 32, 128),
        "video-text": (tokens, TEXT_TOKENS, 32, 128),
        "audio->video": (tokens, AUDIO_TOKENS, 32, 64),
        "video->audio": (AUDIO_TOKENS, tokens, 32, 64),
    }.items():
        for layout in ("from (B,T,H,D)", "contiguous"):
            q, k, v = qkv(q_len, kv_len, heads, head_dim, layout != "contiguous")
            attend = lambda q=q, k=k, v=v, d=head_dim: mx.fast.scaled_dot_product_attention(q, k, v, scale=d**-0.5)  # noqa: E731
            t = seconds(attend)
            flop = 4 * heads * q_len * kv_len * head_dim
            out[f"{name} {layout}"] = {"ms": round(t * 1e3, 3), "tflop_per_s": round(flop / t / 1e12, 1),
                                       **scratch(attend, heads * q_len * kv_len * 2)}  # fmt: skip
    return out


def scratch(fn: Callable[[], mx.array], scores_bytes: int) -> dict:
    """Memory one call needs beyond its inputs and output, against the size of its bf16 score matrix: about equal
    means the attention is computed by materialising the scores (a fallback), far less means a fused kernel."""
    mx.synchronize()
    before = mx.get_active_memory()
    mx.reset_peak_memory()
    result = fn()
    mx.eval(result)
    extra = mx.get_peak_memory() - before - result.nbytes
    return {"scratch_mb": round(extra / 1e6, 1), "scores_mb": round(scores_bytes / 1e6, 1)}


def elementwise(model: LTXModel, tokens: int) -> dict:
    f, h, w = VIDEO_GRIDS[tokens]
    tables = model.rope(video_positions(f, h, w, 24.0), "video", mx.bfloat16).self_attention
    x = mx.random.normal((1, tokens, 4096)).astype(mx.bfloat16)
    hidden = mx.random.normal((1, tokens, 16384)).astype(mx.bfloat16)
    shift, scale = (mx.random.normal((1, 1, 4096)).astype(mx.bfloat16) for _ in range(2))
    fused_qkv = mx.random.normal((1, tokens, 3 * 4096)).astype(mx.bfloat16)
    weight = mx.ones((4096,), dtype=mx.bfloat16)
    mx.eval(tables.cos, tables.sin, x, hidden, shift, scale, fused_qkv, weight)
    split_q = mx.split(fused_qkv, 3, axis=-1)[0]  # rows 3 x 4096 apart: RMSNorm copies it first
    rope = lambda: apply_rotary(x, tables)  # noqa: E731
    modulated = lambda: mx.fast.rms_norm(x, None, 1e-6) * (1 + scale) + shift  # noqa: E731
    gelu = lambda: nn.gelu_approx(hidden)  # noqa: E731
    return {
        name: round(seconds(fn) * 1e3, 3)
        for name, fn in {
            "rope eager": rope, "rope compiled": mx.compile(rope),
            "rms_norm+modulation eager": modulated, "rms_norm+modulation compiled": mx.compile(modulated),
            "q_norm contiguous": lambda: mx.fast.rms_norm(x, weight, 1e-6),
            "q_norm of a fused-qkv split": lambda: mx.fast.rms_norm(split_q, weight, 1e-6),
            "gelu eager": gelu, "gelu compiled": mx.compile(gelu),
        }.items()
    }  # fmt: skip


# Primitives that make no kernel: views and shape changes.
VIEWS = {"Slice", "Reshape", "Broadcast", "Squeeze", "ExpandDims", "Transpose", "AsStrided", "Flatten", "Unflatten",
         "Split"}  # fmt: skip
KINDS = {
    "AddMM": "matmul", "Matmul": "matmul", "QuantizedMatmul": "matmul", "GatherMM": "matmul", "GatherQMM": "matmul",
    "ScaledDotProductAttention": "sdpa", "RMSNorm": "norm", "LayerNorm": "norm", "AsType": "astype", "Copy": "copy",
    "Contiguous": "copy", "Concatenate": "concatenate", "Gather": "gather", "Take": "gather", "TakeAlongAxis": "gather",
}  # fmt: skip


def block_primitives(outputs: list[mx.array]) -> dict:
    """Kernels of the outputs' unevaluated graph (one compiled block): the count per kind and per primitive (a fused
    elementwise kernel is named after the operations it holds). Each is one launch and, but for the small modulation
    tables, one pass over its arrays."""
    dot = io.StringIO()
    mx.export_to_dot(dot, *outputs)
    names = [n for n in re.findall(r'label ="([A-Za-z]+)', dot.getvalue()) if n not in VIEWS]
    by_kind: dict[str, int] = defaultdict(int)
    by_primitive: dict[str, int] = defaultdict(int)
    for name in names:
        by_kind["fused elementwise" if name.startswith("Compiled") else KINDS.get(name, name)] += 1
        by_primitive[name] += 1
    by_count = lambda counts: dict(sorted(counts.items(), key=lambda item: -item[1]))  # noqa: E731
    return {"total": len(names), "by_kind": by_count(by_kind), "by_primitive": by_count(by_primitive)}


def block(tokens: int) -> dict:
    cfg = {**section("2.0"), "num_layers": 1}
    config = TransformerConfig.from_section(cfg)
    model = LTXModel(config)
    model.set_dtype(mx.bfloat16)
    mx.eval(model.parameters())
    model.fuse_projections()  # as load_transformer does
    video, audio = engine_inputs(model, tokens, np.random.default_rng(0))
    v, a = model._prepare(video, audio, ""), model._prepare(audio, video, "audio_")
    mx.eval(model.parameters())  # the fused projections' stacked weights, which the first forward would make
    for s in (v, a):  # everything a block reads, so the block's graph holds the block alone
        mx.eval(s.x, s.context, s.timesteps, s.cross_scale_shift, s.cross_gate, s.pe.cos, s.pe.sin)
        mx.eval(s.cross_pe.cos, s.cross_pe.sin)
    the_block, compiled = model.transformer_blocks[0], model.compiled_blocks()
    flags = (False, False, False)
    out = {"elementwise_ms": elementwise(model, tokens)}
    out["primitives"] = {
        "block compiled": block_primitives(compiled(0, v, a, flags)),
        "block compiled, video only": block_primitives(compiled(0, v, None, flags)[:1]),
    }
    for name, fn in {
        "block eager": lambda: the_block(v, a),
        "block compiled": lambda: compiled(0, v, a, flags),
        "block compiled, video only": lambda: compiled(0, v, None, flags),
        "block compiled, no cross-modal": lambda: compiled(0, v, a, (False, False, True)),
    }.items():
        mx.reset_peak_memory()
        t = seconds(fn)
        out[name] = {"ms": round(t * 1e3, 2), "x48_s": round(48 * t, 3),
                     "peak_gb": round(mx.get_peak_memory() / 1e9, 2)}  # fmt: skip
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--video", type=int, choices=sorted(VIDEO_GRIDS), default=6144)
    args = parser.parse_args()
    report = {"benchmark": "transformer block profile", "device": str(mx.default_device()), "mlx": mx.__version__,
              "video_tokens": args.video, "audio_tokens": AUDIO_TOKENS, "text_tokens": TEXT_TOKENS}  # fmt: skip
    report["matmul"] = matmuls(args.video, 4096)
    report["attention"] = attentions(args.video)
    report.update(block(args.video))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
