"""LoRA files for any checkpoint (tests): random low-rank pairs in ltx-core's spelling on chosen layers."""

from __future__ import annotations

from pathlib import Path

import mlx.core as mx

from ltx_backend.models.transformer import LTXModel, TransformerConfig
from ltx_backend.weights.checkpoint import open_checkpoint
from ltx_backend.weights.lora import model_targets, our_layer
from ltx_backend.weights.transformer import transformer_section


def ltx_core_name(ours: str) -> str:
    """Our unstacked layer path in ltx-core's spelling (the inverse of ``lora.our_layer`` for linear layers)."""
    name = ours.replace(".to_out", ".to_out.0").replace("ff.proj_in", "ff.net.0.proj")
    return name.replace("ff.proj_out", "ff.net.2")


def write_lora(
    path: Path,
    model_dir: Path,
    rank: int = 2,
    seed: int = 0,
    metadata: dict[str, str] | None = None,
    every: int = 3,
    scale: float = 0.2,
) -> Path:
    """A rank-`rank` LoRA on every `every`-th linear layer of the checkpoint's transformer (blocks and the layers
    outside them), keyed ``diffusion_model.<layer>.lora_A/B.weight`` as LTX-2 trainer files are."""
    model = LTXModel(TransformerConfig.from_section(transformer_section(open_checkpoint(model_dir))))
    targets = model_targets(model)
    tensors = {}
    key = mx.random.key(seed)
    for index, (ours, target) in enumerate(sorted(targets.items())):
        name = ltx_core_name(ours)
        if index % every or our_layer(name) != ours:
            continue
        key, a_key, b_key = mx.random.split(key, 3)
        out, inp = target.shape
        tensors[f"diffusion_model.{name}.lora_A.weight"] = mx.random.normal((rank, inp), key=a_key) * scale
        tensors[f"diffusion_model.{name}.lora_B.weight"] = mx.random.normal((out, rank), key=b_key) * scale
    assert any("transformer_blocks" not in name for name in tensors), "no layer outside the blocks"
    mx.save_safetensors(str(path), tensors, metadata=metadata or {})
    return path
