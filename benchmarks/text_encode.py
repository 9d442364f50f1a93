"""Gemma text encoding benchmark: all hidden states of a 1024-token prompt, full-size config, random weights.

    python benchmarks/text_encode.py                 # Gemma 3 12B and 4B, bf16
    python benchmarks/text_encode.py --sizes 12b --quantize 4
    python benchmarks/text_encode.py --sizes 12b,g4-12b   # Gemma 3 12B (LTX-2/2.3) vs Gemma 4 12B unified (LTX-2.5)

Reports seconds per encode, tokens per second, peak memory and matmul TFLOP/s. Prints one JSON document.
"""

from __future__ import annotations

import argparse
import json
import time

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten

from ltx_backend.models.gemma3 import Gemma3Config, Gemma3TextModel
from ltx_backend.models.gemma4 import Gemma4Config, Gemma4TextModel

TOKENS = 1024
SIZES = {  # the published Gemma 3 text configs
    "12b": {"hidden_size": 3840, "intermediate_size": 15360, "num_hidden_layers": 48, "num_attention_heads": 16,
            "num_key_value_heads": 8},
    "4b": {"hidden_size": 2560, "intermediate_size": 10240, "num_hidden_layers": 34, "num_attention_heads": 8,
           "num_key_value_heads": 4},
}  # fmt: skip


def matmul_flops(c: Gemma3Config | Gemma4Config, tokens: int) -> float:
    """Projections, MLP and attention (causal: half the score matrix), 2 per multiply-add; no lm_head. Gemma 4's
    full layers are wider (global_head_dim) with one KV head and no value projection."""
    total = 0.0
    for kind in c.layer_types:
        full = kind == "full_attention" and isinstance(c, Gemma4Config)
        head_dim = c.global_head_dim if full else c.head_dim
        kv_heads = c.num_global_key_value_heads if full else c.num_key_value_heads
        q, kv = c.num_attention_heads * head_dim, kv_heads * head_dim
        projections = 2 * tokens * c.hidden_size * (2 * q + (1 if full else 2) * kv)
        mlp = 2 * tokens * c.hidden_size * c.intermediate_size * 3
        attention = 2 * 2 * tokens * tokens * q / 2
        total += projections + mlp + attention
    return total


def gemma_config(size: str) -> Gemma3Config:
    """A published Gemma 3 text config ("12b" or "4b"): 5 sliding-window layers, then one global, repeated."""
    layers = SIZES[size]["num_hidden_layers"]
    types = tuple("full_attention" if (i + 1) % 6 == 0 else "sliding_attention" for i in range(layers))
    return Gemma3Config(**SIZES[size], head_dim=256, query_pre_attn_scalar=256, layer_types=types)


def run(size: str, quantize: int | None, repeat: int) -> dict:
    if size == "g4-12b":  # the LTX-2.5 text encoder: Gemma4Config's defaults are its real text_config
        config = Gemma4Config()
        model = Gemma4TextModel(config)
    else:
        config = gemma_config(size)
        model = Gemma3TextModel(config)
    model.set_dtype(mx.bfloat16)
    if quantize:
        nn.quantize(model, group_size=64, bits=quantize)
    mx.eval(model.parameters())
    weights_gb = sum(v.nbytes for _, v in tree_flatten(model.parameters())) / 1e9
    ids = mx.random.randint(0, config.vocab_size, (1, TOKENS))
    mask = mx.concatenate([mx.zeros((1, TOKENS // 2), mx.int32), mx.ones((1, TOKENS - TOKENS // 2), mx.int32)], 1)

    def encode() -> None:
        mx.eval(mx.stack(model.hidden_states(ids, mask), axis=-1))

    encode()
    mx.reset_peak_memory()
    start = time.perf_counter()
    for _ in range(repeat):
        encode()
    seconds = (time.perf_counter() - start) / repeat
    return {
        "model": "gemma-4-12b-unified" if size == "g4-12b" else f"gemma-3-{size}", "quantize": quantize,
        "weights_gb": round(weights_gb, 2),
        "seconds": round(seconds, 4), "tokens_per_s": round(TOKENS / seconds),
        "peak_gb": round(mx.get_peak_memory() / 1e9, 2),
        "tflop_per_s": round(matmul_flops(config, TOKENS) / seconds / 1e12, 1),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="12b,4b")
    parser.add_argument("--quantize", type=int, choices=[4, 8], default=None)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    results = [run(size, args.quantize, args.repeat) for size in args.sizes.split(",")]
    report = {"benchmark": "Gemma text encoding (all hidden states)", "tokens": TOKENS,
              "device": str(mx.default_device()), "mlx": mx.__version__, "results": results}  # fmt: skip
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
