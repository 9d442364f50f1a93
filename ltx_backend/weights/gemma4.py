"""Open a Gemma 4 unified text encoder (LTX-2.5) and load its language model and tokenizer.

Two layouts:
- the official single file (``text_encoders/gemma4-12b-with-proj-ltx-2.5-bf16.safetensors``): Comfy-flat keys
  (``model.layers.*``, ``model.embed_tokens.weight``, ``model.norm.weight``, vision/audio embedders beside them),
  the LTX text projection (``text_embedding_projection.*``), the HF config JSON in the metadata ``gemma_config``
  and the tokenizer as uint8 tensors (``tokenizer_json``, ``hf_asset__tokenizer_config.json``);
- a Hugging Face style folder: ``config.json`` (model_type gemma4_unified), ``*.safetensors`` with
  ``model.language_model.*`` (or mlx-vlm's ``language_model.model.*``) keys, ``tokenizer.json``; bf16 or
  quantized (MLX affine, bits and group size from ``config.json`` or, failing that, from the stored shapes).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx.utils import tree_flatten

from ltx_backend.errors import ErrorCode, LtxError
from ltx_backend.models.gemma4 import Gemma4Config, Gemma4TextModel, sanitize_gemma4_key
from ltx_backend.weights.checkpoint import Component
from ltx_backend.weights.gemma import tokenizer_dir
from ltx_backend.weights.load import load_module, quantize_like
from ltx_backend.weights.safetensors_file import SafetensorsFile

TOKENIZER_BLOB = "tokenizer_json"
ASSET_PREFIX = "hf_asset__"
PROJECTION_PREFIX = "text_embedding_projection."
SPECIAL_TOKENS = ("bos_token", "eos_token", "pad_token", "unk_token")


def _invalid(path: Path, what: str, hint: str) -> LtxError:
    return LtxError(ErrorCode.TEXT_ENCODER_INVALID, f"text encoder at {path}: {what}", hint, path=str(path))


@dataclass
class Gemma4Source:
    """A Gemma 4 text encoder on disk: its config, weight files and where the tokenizer lives."""

    path: Path
    raw_config: dict
    config: Gemma4Config
    files: list[SafetensorsFile]
    single_file: bool

    @property
    def gemma_version(self) -> str | None:
        """ltx-core's pairing tag (``gemma4-12b-ltx-v1``): the transformer's gemma_source_checkpoint must match."""
        return self.raw_config.get("gemma_version")

    def component(self) -> Component:
        tensors = {}
        for file in self.files:
            tensors.update(file.tensors)
        return Component("text_encoder", tensors, {file.path: file for file in self.files}, "torch")

    def projection(self) -> Component | None:
        """The LTX text projection stored beside the language model (the official file), keys without prefix."""
        tensors, owners = {}, {}
        for file in self.files:
            for key, info in file.tensors.items():
                if key.startswith(PROJECTION_PREFIX):
                    tensors[key[len(PROJECTION_PREFIX) :]] = info
                    owners[file.path] = file
        return Component("text_embedding_projection", tensors, owners, "torch") if tensors else None


def open_gemma4(path: str | Path) -> Gemma4Source:
    """Open a Gemma 4 text encoder: an official ``.safetensors`` file or a Hugging Face style folder."""
    path = Path(path).expanduser()
    if path.is_file():
        file = SafetensorsFile(path)
        raw = file.metadata.get("gemma_config")
        if raw is None:
            raise _invalid(
                path,
                "the file carries no 'gemma_config' metadata",
                "Use the LTX-2.5 text encoder file (text_encoders/gemma4-12b-with-proj-ltx-2.5-bf16.safetensors).",
            )
        return Gemma4Source(path, *_parse_config(path, raw), [file], single_file=True)
    if not path.is_dir():
        raise LtxError(ErrorCode.MODEL_NOT_FOUND, f"No text encoder at {path}", "Check the text-encoder path.")
    config_path = path / "config.json"
    if not config_path.is_file():
        raise _invalid(path, "config.json is missing", "Use a Gemma 4 unified folder or the official LTX-2.5 TE file.")
    raw, config = _parse_config(path, config_path.read_text())
    files = [SafetensorsFile(p) for p in sorted(path.glob("*.safetensors"))]
    if not files:
        raise _invalid(path, "no .safetensors weights", "Download the text encoder again.")
    return Gemma4Source(path, raw, config, files, single_file=False)


def _parse_config(path: Path, text: str) -> tuple[dict, Gemma4Config]:
    try:
        raw = json.loads(text)
        if not isinstance(raw, dict):
            raise TypeError("not a JSON object")
        return raw, Gemma4Config.from_dict(raw)
    except (json.JSONDecodeError, TypeError, AttributeError, KeyError) as exc:
        raise _invalid(path, f"the Gemma config is unreadable ({exc})", "Re-download the text encoder.") from exc
    except ValueError as exc:
        raise _invalid(
            path,
            f"the config does not describe a Gemma 4 unified text encoder ({exc})",
            "LTX-2.5 needs its Gemma 4 text encoder (gemma4-12b-with-proj-ltx-2.5); LTX-2/2.3 use Gemma 3.",
        ) from exc


def _quantization(source: Gemma4Source, model: nn.Module, component: Component) -> tuple[int, int]:
    """Bits and group size: from config.json's ``quantization``, else from a stored layer's packed shapes."""
    q = source.raw_config.get("quantization") or source.raw_config.get("quantization_config")
    if isinstance(q, dict) and "bits" in q:
        return int(q["bits"]), int(q.get("group_size", 64))
    shapes = {key: value.shape for key, value in tree_flatten(model.parameters())}
    for path in sorted(component.quantized_paths):
        ours = sanitize_gemma4_key(path + ".weight")
        weight, scales = component.tensors.get(path + ".weight"), component.tensors.get(path + ".scales")
        if ours in shapes and weight is not None and scales is not None:
            in_dim = shapes[ours][-1]
            return 32 * weight.shape[-1] // in_dim, in_dim // scales.shape[-1]
    raise _invalid(source.path, "quantized layers without a readable quantization", "Re-convert the text encoder.")


def load_gemma4(source: Gemma4Source | str | Path, dtype: mx.Dtype | None = None) -> Gemma4TextModel:
    """The Gemma 4 language model, exactly (every parameter from the checkpoint), quantized layers as stored."""
    source = source if isinstance(source, Gemma4Source) else open_gemma4(source)
    model = Gemma4TextModel(source.config)
    component = source.component()
    if component.quantized_paths:
        bits, group = _quantization(source, model, component)
        quantize_like(model, component, sanitize_gemma4_key, bits, group)
    load_module(model, component, sanitize_gemma4_key, dtype)
    return model


def load_gemma4_tokenizer(source: Gemma4Source | str | Path):
    """The tokenizer: from the blobs inside the official file, or the folder's tokenizer files."""
    source = source if isinstance(source, Gemma4Source) else open_gemma4(source)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    if not source.single_file:
        return AutoTokenizer.from_pretrained(str(tokenizer_dir(source.path)), local_files_only=True)
    file = source.files[0]
    if TOKENIZER_BLOB not in file:
        raise _invalid(source.path, f"no {TOKENIZER_BLOB!r} tensor (the tokenizer)", "Re-download the TE file.")
    from tokenizers import Tokenizer

    def blob(name: str) -> str:
        return np.array(file.array(name)).astype(np.uint8).tobytes().decode("utf-8")

    settings = {}
    config_key = ASSET_PREFIX + "tokenizer_config.json"
    if config_key in file:
        config = json.loads(blob(config_key))
        settings = {key: config[key] for key in SPECIAL_TOKENS if isinstance(config.get(key), str)}
    try:
        return PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(blob(TOKENIZER_BLOB)), **settings)
    except (ValueError, Exception) as exc:  # tokenizers raises its own Exception subclass for bad JSON
        raise _invalid(
            source.path, f"the stored tokenizer cannot be loaded ({exc})", "Re-download the TE file."
        ) from exc


def ltx_tokenize(tokenizer, prompt: str, max_length: int, bos_id: int, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """ltx-core's ``LTXGemmaTokenizer``: strip, tokenize (truncated), prepend BOS when the tokenizer did not (Gemma
    4's adds none) and cut to `max_length`, left-pad with the pad id. Returns (ids, mask), each (1, max_length)."""
    ids = list(tokenizer(prompt.strip(), truncation=True, max_length=max_length)["input_ids"])
    if not ids or ids[0] != bos_id:
        ids = [bos_id, *ids][:max_length]
    pad = max_length - len(ids)
    mask = np.array([[0] * pad + [1] * len(ids)], dtype=np.int32)
    return np.array([[pad_id] * pad + ids], dtype=np.int32), mask
