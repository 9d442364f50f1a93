"""One rank of the tensor-parallel forward check (run by tests/test_distributed.py through ``run_ranks``).

Every rank builds the same random-weight tiny transformer and inputs (same seeds); rank 0 first runs the whole
model in this process (the single-process reference), then every rank splits its copy and runs the sharded
forward; rank 0 prints one JSON line with the largest differences. Also checks the guidance split: each rank runs
its share of four differently perturbed passes and the all-reduced results equal the passes run in turn.
"""

from __future__ import annotations

import json
import sys

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_map

from ltx_backend.models.quantized_linear import dequantize_large_products
from ltx_backend.models.rope import audio_positions, video_positions
from ltx_backend.models.transformer import LTXModel, Perturbations, StreamInput, TransformerConfig
from ltx_backend.parallel.guidance import split_passes
from ltx_backend.parallel.launch import init_group
from ltx_backend.parallel.tensor import shard_transformer
from ltx_backend.tiny import TRANSFORMER, TRANSFORMER_23

# The tiny sections with widths of 64 per stream (2 heads x 32), so that each of 2 ranks holds whole 32-wide
# quantization groups of every row-parallel layer (attention outputs 64 -> 32 per rank, feed-forward 256 -> 128).
WIDE = {"attention_head_dim": 32, "audio_attention_head_dim": 32, "cross_attention_dim": 64,
        "audio_cross_attention_dim": 64}  # fmt: skip
SECTIONS = {"2.0": {**TRANSFORMER, **WIDE}, "2.3": {**TRANSFORMER_23, **WIDE}}
GROUP_SIZE = 32
SCALE = 0.2  # random weights ~N(0, 0.2^2): outputs of order 10, not chaotic


def build(version: str, bits: int | None, dtype: mx.Dtype = mx.float32) -> LTXModel:
    mx.random.seed(7)
    model = LTXModel(TransformerConfig.from_section(SECTIONS[version]))
    # Non-trivial norms, tables and biases (zeros/ones would hide a wrong slice).
    model.update(tree_map(lambda a: mx.random.normal(a.shape) * SCALE, model.parameters()))
    if bits:
        predicate = lambda path, m: isinstance(m, nn.Linear) and path.startswith("transformer_blocks.")  # noqa: E731
        nn.quantize(model, group_size=GROUP_SIZE, bits=bits, class_predicate=predicate)
    model.fuse_projections()
    if dtype != mx.float32:
        model.update(tree_map(lambda a: a.astype(dtype) if mx.issubdtype(a.dtype, mx.floating) else a,
                              model.parameters()))  # fmt: skip
    mx.eval(model.parameters())
    return model


def inputs(model: LTXModel, dtype: mx.Dtype = mx.float32) -> tuple[StreamInput, StreamInput]:
    c = model.config
    mx.random.seed(11)
    f, h, w, a = 2, 2, 3, 5
    v_pos, a_pos = video_positions(f, h, w, 24.0), audio_positions(a)
    video = StreamInput(
        latent=mx.random.normal((1, f * h * w, c.in_channels)),
        timesteps=mx.random.uniform(shape=(1, f * h * w)),  # per-token timesteps (a conditioned state)
        sigma=mx.array([0.7]),
        context=mx.random.normal((1, 6, c.caption_channels or c.cross_attention_dim)),
        context_mask=mx.array([[1, 1, 1, 1, 0, 0]]),
        rope=model.rope(v_pos, "video", dtype),
    )
    audio = StreamInput(
        latent=mx.random.normal((1, a, c.audio_in_channels)),
        timesteps=mx.full((1, 1), 0.4),
        sigma=mx.array([0.4]),
        context=mx.random.normal((1, 6, c.caption_channels or c.audio_cross_attention_dim)),
        context_mask=mx.array([[1, 1, 1, 0, 0, 0]]),
        rope=model.rope(a_pos, "audio", dtype),
    )
    cast = lambda s: StreamInput(**{**vars(s), "latent": s.latent.astype(dtype), "context": s.context.astype(dtype)})  # noqa: E731
    return cast(video), cast(audio)


PASSES = (Perturbations(), Perturbations(skip_video_self_attention=frozenset({1})),
          Perturbations(skip_audio_self_attention=frozenset({0})), Perturbations(skip_cross_modal=True))  # fmt: skip


def compare(
    model: LTXModel, group: mx.distributed.Group, name: str, report: dict, guidance: bool, compile: bool = False
) -> None:
    video, audio = inputs(model, model.patchify_proj.weight.dtype if "weight" in model.patchify_proj else mx.float32)
    compiled: list = []  # the blocks through one mx.compile trace (as on GPUs), built after sharding
    runs = [lambda p=p: model(video, audio, perturbations=p) for p in PASSES]
    runs.append(lambda: (model(video, None)[0], model(None, audio)[1]))  # one stream alone
    runs += [
        lambda p=p: model(video, audio, perturbations=p, compiled=compiled[0] if compiled else None) for p in PASSES[:2]
    ]
    references = [run() for run in runs] if group.rank() == 0 else None
    if guidance:  # the guidance split, on the whole model: passes on different ranks
        split = split_passes(group)(list(range(len(runs))), lambda chosen: [runs[i]() for i in chosen])
        in_turn = [run() for run in runs]
        pairs = [(s, t) for got, want in zip(split, in_turn, strict=True) for s, t in zip(got, want, strict=True)]
        report[f"{name}-guidance"] = max(float(mx.max(mx.abs(s - t))) for s, t in pairs)
    shard_transformer(model, group)
    compiled.append(model.compiled_blocks())
    sharded = [run() for run in runs]
    mx.eval(sharded)
    if references is not None:
        pairs = [(s, r) for got, want in zip(sharded, references, strict=True) for s, r in zip(got, want, strict=True)]
        report[name] = {
            "max_abs": max(float(mx.max(mx.abs(s - r))) for s, r in pairs),
            "max_ref": max(float(mx.max(mx.abs(r))) for _, r in pairs),
        }


def all_reduces_per_forward(model: LTXModel) -> int:
    """How many all-reduces one sharded forward of both streams makes (counted as the graph is built)."""
    video, audio = inputs(model)
    calls, original = [0], mx.distributed.all_sum

    def counting(*args, **kwargs) -> mx.array:
        calls[0] += 1
        return original(*args, **kwargs)

    mx.distributed.all_sum = counting
    try:
        mx.eval(model(video, audio))
    finally:
        mx.distributed.all_sum = original
    return calls[0]


def main() -> None:
    group = init_group()
    report: dict = {}
    for version in ("2.0", "2.3"):
        for bits in (None, 4, 8):
            name = f"{version}-{'dense' if bits is None else f'q{bits}'}"
            compare(build(version, bits), group, name, report, bits is None, compile=version == "2.3" and not bits)
        compare(build(version, None, mx.bfloat16), group, f"{version}-bf16", report, guidance=False)
        # Q4 as the engine runs it on CUDA: the quantized layers multiply through their dequantized weights.
        model = build(version, 4)
        dequantize_large_products(model, min_rows=1)
        compare(model, group, f"{version}-q4-dequantizing", report, guidance=False)
    model = shard_transformer(build("2.3", None), group)
    report["all_reduces"] = {"forward": all_reduces_per_forward(model), "blocks": model.config.num_layers}
    if group.rank() == 0:
        print(json.dumps(report))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
