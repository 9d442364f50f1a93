"""LTX-2.5 compute in one run: a DiT forward at 1536 / 6144 video tokens, a Gemma 4 encode of 1024 tokens (random
weights of the real shapes, bf16), and ltx-core 1.0.0's LTX-2.3 forward on the same token counts for comparison.

    python benchmarks/ltx25_forward.py                       # GPU: everything, the reference in a subprocess
    python benchmarks/ltx25_forward.py --compile             # our blocks through one shared mx.compile trace
    python benchmarks/ltx25_forward.py --reference-python /path/to/venv/bin/python   # torch + ltx-core 1.0.0 there
    python benchmarks/ltx25_forward.py --tiny                # CPU smoke run: tiny shapes, no reference

The DiT inputs are the engine's for a distilled stage (one timestep row for all tokens, no text mask) plus the
LTX-2.5 keyframe marker on the first latent frame, as the sampler passes it. ltx-core 1.0.0 has no 2.5 model (no
marker, video FFN biases): its 2.3 forward is the same work but 983,040 bias adds, so the times compare directly.
The reference runs ``benchmarks/transformer_forward.py --backend ltx-core --version 2.3`` in a subprocess (PyTorch
and MLX do not share the GPU's memory pools); it is reported as skipped where torch, CUDA or ltx-core is missing.
Prints one JSON document.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from transformer_forward import (  # noqa: E402
    AUDIO_TOKENS,
    TEXT_TOKENS,
    VIDEO_GRIDS,
    engine_inputs,
    flops,
    section,
    timed_passes,
)

GEMMA_TOKENS = 1024
TINY_GRIDS = {96: (2, 6, 8), 384: (4, 8, 12)}  # --tiny: video token counts and their (frames, h, w)


def ltx25_section(tiny: bool) -> dict:
    cfg = {**section("2.3"), "ff_bias": False, "use_keyframes_abs_pos_embedding": True}
    if tiny:
        from ltx_backend.tiny_ltx25 import _sections

        cfg = dict(_sections()["transformer"])
    return cfg


def run_dit(tiny: bool, repeat: int, compiled: bool) -> dict:
    import mlx.core as mx
    from mlx.utils import tree_flatten

    from ltx_backend.models.transformer import LTXModel, TransformerConfig
    from ltx_backend.pipeline.sampler import IN_FLIGHT, SUBMIT_EVERY_BLOCKS

    cfg = ltx25_section(tiny)
    model = LTXModel(TransformerConfig.from_section(cfg))
    model.set_dtype(mx.bfloat16)
    mx.eval(model.parameters())
    model.fuse_projections()
    weights_gb = sum(v.nbytes for _, v in tree_flatten(model.parameters())) / 1e9
    rng = np.random.default_rng(0)
    grids = TINY_GRIDS if tiny else {count: VIDEO_GRIDS[count] for count in (1536, 6144)}  # a job's two stages
    results = []
    for count, grid in grids.items():
        context = 128 if tiny else TEXT_TOKENS
        audio_tokens = AUDIO_TOKENS if context == TEXT_TOKENS else 9
        video, audio = engine_inputs(model, math.prod(grid), rng, grid, context, audio_tokens, marked=True)
        blocks = model.compiled_blocks() if compiled else None

        def forward(video=video, audio=audio, blocks=blocks):
            return model(video, audio, compiled=blocks, eval_every=SUBMIT_EVERY_BLOCKS, in_flight=IN_FLIGHT)

        first, seconds = timed_passes(forward, repeat)
        work = flops(cfg, count, 9 if tiny else AUDIO_TOKENS, 128 if tiny else TEXT_TOKENS)
        results.append({
            "video_tokens": count, "seconds": round(seconds, 4), "first_pass_s": round(first, 3),
            "peak_gb": round(mx.get_peak_memory() / 1e9, 2), "tflop": round(work / 1e12, 3),
            "tflop_per_s": round(work / seconds / 1e12, 2),
        })  # fmt: skip
    model = None  # freed before the next part
    mx.clear_cache()
    return {"backend": "ltx-backend (MLX)" + (", compiled blocks" if compiled else ""),
            "model": "LTX-2.5 DiT (no video FFN bias, keyframe marker)", "weights_gb": round(weights_gb, 2),
            "results": results}  # fmt: skip


def gemma4_flops(c, tokens: int) -> float:
    """Matrix-product FLOPs of one encode (2 per multiply-add): projections, attention, MLP; no lm_head."""
    total = 0.0
    d, heads = c.hidden_size, c.num_attention_heads
    for kind in c.layer_types:
        sliding = kind == "sliding_attention"
        head_dim = c.head_dim if sliding else c.global_head_dim
        kv_heads = c.num_key_value_heads if sliding else c.num_global_key_value_heads
        kv = (1 if c.attention_k_eq_v and not sliding else 2) * kv_heads * head_dim
        total += 2 * tokens * d * (2 * heads * head_dim + kv)  # q, o; k (and v)
        total += 2 * 2 * tokens * tokens * heads * head_dim  # scores and values
        total += 2 * tokens * 3 * d * c.intermediate_size
    return total


def run_gemma4(tiny: bool, repeat: int) -> dict:
    import mlx.core as mx
    from mlx.utils import tree_flatten

    from ltx_backend.models.gemma4 import Gemma4Config, Gemma4TextModel

    if tiny:
        from ltx_backend.tiny_ltx25 import _gemma_config

        config = Gemma4Config.from_dict(_gemma_config(643))
    else:
        config = Gemma4Config()  # the real 12B unified text tower
    model = Gemma4TextModel(config)
    model.set_dtype(mx.bfloat16)
    mx.eval(model.parameters())
    weights_gb = sum(v.nbytes for _, v in tree_flatten(model.parameters())) / 1e9
    rng = np.random.default_rng(1)
    tokens = GEMMA_TOKENS
    ids = mx.array(rng.integers(4, config.vocab_size, (1, tokens)), dtype=mx.int32)
    mask = mx.ones((1, tokens), dtype=mx.int32)  # a full prompt: the worst case of the padded 1024

    def encode():
        return mx.stack(model.hidden_states(ids, mask), axis=-1)

    first, seconds = timed_passes(encode, repeat)
    work = gemma4_flops(config, tokens)
    model = None  # freed before the next part
    mx.clear_cache()
    return {"backend": "ltx-backend (MLX)", "model": "Gemma 4 unified text tower" + (" (tiny)" if tiny else " 12B"),
            "weights_gb": round(weights_gb, 2), "tokens": tokens, "seconds": round(seconds, 4),
            "first_pass_s": round(first, 3), "peak_gb": round(mx.get_peak_memory() / 1e9, 2),
            "tflop": round(work / 1e12, 3), "tflop_per_s": round(work / seconds / 1e12, 2)}  # fmt: skip


def run_reference(python: str, repeat: int) -> dict:
    """ltx-core 1.0.0's LTX-2.3 forward (PyTorch, CUDA) through transformer_forward.py in its own process."""
    command = [python, str(HERE / "transformer_forward.py"), "--backend", "ltx-core", "--version", "2.3",
               "--repeat", str(repeat)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        return {"backend": "ltx-core 1.0.0 (PyTorch)", "skipped": done.stderr.strip().splitlines()[-1:]}
    return json.loads(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="CPU smoke run: tiny shapes, float math, no reference")
    parser.add_argument("--compile", action="store_true", help="run the DiT blocks through one mx.compile trace")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--reference-python", default=sys.executable, help="a Python with torch + ltx-core 1.0.0")
    parser.add_argument("--skip-reference", action="store_true")
    args = parser.parse_args()
    import mlx.core as mx

    report = {"benchmark": "LTX-2.5 DiT forward + Gemma 4 encode vs ltx-core 1.0.0 LTX-2.3 forward",
              "device": str(mx.default_device()), "mlx": mx.__version__, "tiny": args.tiny,
              "audio_tokens": AUDIO_TOKENS, "text_tokens": TEXT_TOKENS}  # fmt: skip
    report["dit"] = run_dit(args.tiny, args.repeat, args.compile)
    report["gemma4_encode"] = run_gemma4(args.tiny, args.repeat)
    if args.tiny or args.skip_reference:
        report["reference"] = {"backend": "ltx-core 1.0.0 (PyTorch)", "skipped": "--tiny / --skip-reference"}
    else:
        report["reference"] = run_reference(args.reference_python, args.repeat)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
