"""LoRA files for any checkpoint (tests): random low-rank pairs in ltx-core's spelling on chosen layers."""

from __future__ import annotations

from pathlib import Path

import mlx.core as mx

from ltx_backend.models.transformer import LTXModel, TransformerConfig
from ltx_backend.tiny import random_lora
from ltx_backend.weights.checkpoint import open_checkpoint
from ltx_backend.weights.transformer import transformer_section


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
    tensors = random_lora(model, rank, seed, every, scale)
    assert any("transformer_blocks" not in name for name in tensors), "no layer outside the blocks"
    mx.save_safetensors(str(path), tensors, metadata=metadata or {})
    return path
