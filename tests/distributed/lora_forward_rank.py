"""One rank of the tensor-parallel LoRA check (run by tests/test_distributed.py through ``run_ranks``).

Arguments: ``MODEL_DIR LORA_FILE``. Every rank builds the engine's transformer as a rank of a
tensor-parallel group does (``Engine._load_transformer``: the LoRA fused into the whole model, then sharded); rank 0
first loads the same checkpoint and LoRA in this process, unsharded (the single-process reference), and the model
without the LoRA (so the check shows the LoRA mattered). Rank 0 prints one JSON line: the largest
difference sharded vs single-process, the largest reference value and the LoRA's effect.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import mlx.core as mx
from forward_rank import inputs

from ltx_backend.parallel.launch import init_group
from ltx_backend.parallel.run import RankRole
from ltx_backend.pipeline.engine import Engine
from ltx_backend.weights.lora import LoraSpec
from ltx_backend.weights.transformer import load_transformer


def largest(outputs: tuple, others: tuple | None = None) -> float:
    pairs = zip(outputs, others or [mx.zeros_like(o) for o in outputs], strict=True)
    return max(float(mx.max(mx.abs(a - b))) for a, b in pairs)


def main() -> None:
    group = init_group()
    model_dir, lora = sys.argv[1:3]
    specs = [LoraSpec(Path(lora), 0.8)]
    engine = Engine(model_dir, dtype=mx.float32, loras=specs, parallel=RankRole(group, "tensor"))
    reference = plain = None
    if group.rank() == 0:
        single = load_transformer(engine.checkpoint, mx.float32, loras=specs)
        video, audio = inputs(single)
        reference = single(video, audio)
        plain = load_transformer(engine.checkpoint, mx.float32)(video, audio)
        mx.eval(reference, plain)
    sharded = engine._load_transformer(False, engine.loras)  # fused, then this rank's shard
    video, audio = inputs(sharded)
    outputs = sharded(video, audio)
    mx.eval(outputs)
    if reference is not None:
        report = {
            "max_abs": largest(outputs, reference),
            "max_ref": largest(reference),
            "lora_effect": largest(plain, reference),
        }
        print(json.dumps(report))


if __name__ == "__main__":
    main()
