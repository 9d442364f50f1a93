"""Open a Gemma 3 text-encoder repository (mlx-community layouts, bf16 or quantized) and load its language model.

The multimodal checkpoints nest the text model under ``language_model.``; the vision tower and projector are
listed but never read (tensors are loaded lazily, by key).
"""

from __future__ import annotations

import json
from pathlib import Path

import mlx.core as mx

from ltx_backend.errors import ErrorCode, LtxError
from ltx_backend.models.gemma3 import Gemma3Config, Gemma3TextModel, sanitize_gemma_key
from ltx_backend.weights.checkpoint import Component
from ltx_backend.weights.load import load_module, quantize_like
from ltx_backend.weights.safetensors_file import SafetensorsFile

TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model")


def _invalid(root: Path, what: str, hint: str) -> LtxError:
    return LtxError(ErrorCode.TEXT_ENCODER_INVALID, f"text encoder at {root}: {what}", hint, path=str(root))


def read_gemma_config(root: Path) -> tuple[dict, Gemma3Config]:
    path = root / "config.json"
    if not path.is_file():
        raise _invalid(root, "config.json is missing", "Use a Gemma 3 repo such as mlx-community/gemma-3-12b-it-bf16.")
    try:
        raw = json.loads(path.read_text())
        return raw, Gemma3Config.from_dict(raw)
    except (json.JSONDecodeError, TypeError, AttributeError) as exc:
        raise _invalid(root, f"config.json is unreadable ({exc})", "Re-download the text encoder.") from exc
    except ValueError as exc:
        raise _invalid(
            root,
            f"config.json does not describe Gemma 3 ({exc})",
            "LTX-2 needs a Gemma 3 text encoder: mlx-community/gemma-3-12b-it-bf16, gemma-3-12b-it-4bit or "
            "gemma-3-4b-it-bf16.",
        ) from exc


def tokenizer_dir(root: Path) -> Path:
    """Where the tokenizer lives (the repo root, or its ``tokenizer/`` folder); a clear error if nowhere."""
    for candidate in (root, root / "tokenizer"):
        if any((candidate / name).is_file() for name in TOKENIZER_FILES):
            return candidate
    raise _invalid(
        root,
        f"no tokenizer ({' or '.join(TOKENIZER_FILES)})",
        "The text-encoder repo is incomplete: download it again, or pick a repo that ships its tokenizer.",
    )


def gemma_component(root: Path) -> Component:
    files = [SafetensorsFile(path) for path in sorted(root.glob("*.safetensors"))]
    if not files:
        raise _invalid(root, "no .safetensors weights", "Download the text encoder again.")
    tensors = {}
    for file in files:
        tensors.update(file.tensors)
    return Component("text_encoder", tensors, {file.path: file for file in files}, "mlx")


def load_gemma(root: str | Path, dtype: mx.Dtype | None = None) -> Gemma3TextModel:
    """The Gemma 3 language model of a repo directory, pre-quantized layers as stored."""
    model, component = prepare_gemma(root)
    load_module(model, component, sanitize_gemma_key, dtype)
    return model


def prepare_gemma(root: str | Path) -> tuple[Gemma3TextModel, Component]:
    """The language model built from config.json (no weights yet), stored-quantized layers swapped, its tensors."""
    root = Path(root)
    raw, config = read_gemma_config(root)
    model = Gemma3TextModel(config)
    component = gemma_component(root)
    if component.quantized_paths:
        quantization = raw.get("quantization") or raw.get("quantization_config") or {}
        bits, group = int(quantization.get("bits", 4)), int(quantization.get("group_size", 64))
        quantize_like(model, component, sanitize_gemma_key, bits, group)
    return model, component
