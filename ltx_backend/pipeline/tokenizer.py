"""The prompt tokenizer: Gemma's ``tokenizer.json`` through the `tokenizers` library.

Encoding a prompt needs only the fast tokenizer: BOS by the file's post-processor, truncation on the right, left
padding with the pad token, as ``AutoTokenizer(..., padding="max_length", truncation=True)`` does for Gemma.
Importing `transformers` for that cost ~1.1 s of every process start; it is imported only for what needs it (the
chat template of prompt enhancement, and repos that ship only a SentencePiece ``tokenizer.model``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ltx_backend.errors import ErrorCode, LtxError


@dataclass(frozen=True)
class Tokens:
    input_ids: np.ndarray  # (1, max_length) int32, left-padded
    attention_mask: np.ndarray  # (1, max_length) int32, 1 for real tokens
    dropped: int  # tokens cut off the end of the prompt by truncation


def _special(config: dict, name: str) -> str | None:
    value = config.get(name)
    return value.get("content") if isinstance(value, dict) else value


class PromptTokenizer:
    """Encodes prompts with `tokenizers` alone; ``chat`` (transformers) is loaded on first use."""

    def __init__(self, location: Path) -> None:
        from tokenizers import Tokenizer

        self.location = location
        self._chat = None
        self._fast = None
        if not (location / "tokenizer.json").is_file():  # SentencePiece only: transformers converts it
            self.pad_id = None
            return
        try:
            self._fast = Tokenizer.from_file(str(location / "tokenizer.json"))
            config_file = location / "tokenizer_config.json"
            config = json.loads(config_file.read_text(encoding="utf-8")) if config_file.is_file() else {}
        except (OSError, ValueError, Exception) as exc:  # tokenizers raises a bare Exception on a bad file
            raise _invalid(location, exc) from exc
        self.pad_token = _special(config, "pad_token") or _special(config, "eos_token")
        self.pad_id = self._fast.token_to_id(self.pad_token) if self.pad_token else None
        if self.pad_id is None:
            raise _invalid(location, ValueError("the tokenizer has no pad or eos token"))
        self._fast.no_padding()
        self._fast.no_truncation()

    def encode(self, text: str, max_length: int) -> Tokens:
        """`text` with special tokens, truncated to and left-padded to exactly `max_length` tokens."""
        if self._fast is None:
            full = len(self.chat(text)["input_ids"])
            encoded = self.chat(text, padding="max_length", max_length=max_length, truncation=True, return_tensors="np")
            ids, mask = encoded["input_ids"].astype(np.int32), encoded["attention_mask"].astype(np.int32)
            return Tokens(ids, mask, max(0, full - max_length))
        encoding = self._fast.encode(text)
        ids = encoding.ids
        dropped = max(0, len(ids) - max_length)
        if dropped:  # truncate the text, keeping the special tokens (the post-processor re-adds them)
            self._fast.enable_truncation(max_length)
            ids = self._fast.encode(text).ids
            self._fast.no_truncation()
        pad = max_length - len(ids)
        input_ids = np.array([[self.pad_id] * pad + ids], dtype=np.int32)
        mask = np.array([[0] * pad + [1] * len(ids)], dtype=np.int32)
        return Tokens(input_ids, mask, dropped)

    @property
    def chat(self):
        """The `transformers` tokenizer, for chat templates and decoding generated text."""
        if self._chat is None:
            self._chat = load_transformers_tokenizer(self.location)
        return self._chat


def load_transformers_tokenizer(location: Path):
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # only its tokenizers are used: no "no PyTorch" notice
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(location), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise _invalid(location, exc) from exc
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _invalid(location: Path, exc: Exception) -> LtxError:
    return LtxError(
        ErrorCode.TEXT_ENCODER_INVALID,
        f"the tokenizer in {location} cannot be loaded ({exc})",
        "Download the text-encoder repo again.",
    )
