"""Prompt -> Gemma 4 hidden states for the LTX-2.5 text path (the counterpart of ``TextEncoder`` in text.py).

Tokenisation is ltx-core's ``LTXGemmaTokenizer``: Gemma 4's tokenizer adds no BOS, so BOS is prepended; left
padding to 1024 with the pad id; positions are not shifted for the padding. The unified text encoder only encodes:
prompt enhancement needs a separate Gemma 4 instruct model, which this encoder is not.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import mlx.core as mx

from ltx_backend.errors import ErrorCode, LtxError
from ltx_backend.models.gemma4 import Gemma4TextModel
from ltx_backend.pipeline.text import PROMPT_TOKENS, EncodedPrompt
from ltx_backend.weights.gemma4 import load_gemma4, load_gemma4_tokenizer, ltx_tokenize, open_gemma4


class Gemma4TextEncoder:
    """The LTX-2.5 text encoder (official file or Hugging Face folder): tokenizer and language model."""

    def __init__(self, path: str | Path, dtype: mx.Dtype | None = None) -> None:
        self.source = open_gemma4(path)
        self.root = self.source.path
        self.tokenizer = load_gemma4_tokenizer(self.source)
        self.model: Gemma4TextModel | None = load_gemma4(self.source, dtype)

    @property
    def hidden_size(self) -> int:
        return self.source.config.hidden_size

    @property
    def num_states(self) -> int:
        return self.source.config.num_hidden_layers + 1

    def tokenize(self, prompt: str, max_length: int = PROMPT_TOKENS) -> tuple[mx.array, mx.array]:
        pad = self.tokenizer.pad_token_id
        pad = self.tokenizer.eos_token_id if pad is None else pad
        ids, mask = ltx_tokenize(self.tokenizer, prompt, max_length, self.source.config.bos_token_id, pad)
        return mx.array(ids), mx.array(mask)

    def encode(
        self,
        prompt: str,
        max_length: int = PROMPT_TOKENS,
        check: Callable[[], None] | None = None,
        warn: Callable[[str], None] | None = None,
    ) -> EncodedPrompt:
        """As ``TextEncoder.encode``: `check` runs after every layer (cancellation), `warn` hears of a truncation."""
        if self.model is None:
            raise RuntimeError("the text encoder was released")
        if warn is not None and (count := len(self.tokenizer(prompt.strip())["input_ids"]) + 1) > max_length:
            warn(f"The prompt has about {count} tokens; only the first {max_length} are used.")
        if check is not None:
            check()
        ids, mask = self.tokenize(prompt, max_length)
        hidden = mx.stack(self.model.hidden_states(ids, mask, after_layer=check), axis=-1)
        mx.eval(hidden)
        return EncodedPrompt(hidden, mask)

    def enhance(self, prompt: str, image_to_video: bool = False, seed: int = 10, **_: object) -> str:
        raise LtxError(
            ErrorCode.INVALID_PARAMS,
            "prompt enhancement is not available with the LTX-2.5 text encoder (it only encodes)",
            "Turn prompt enhancement off for LTX-2.5 models.",
            field="enhance_prompt",
        )

    def release(self) -> None:
        self.model = None
        mx.clear_cache()
